"""Rich tables of jobs, models, BN layers and experiments, and the JSON the `--json` flags print."""

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.table import Column, Table

from bncore.specs import ModelSpec
from service.schemas import (
    ActivationsOut,
    BatchNormLayerOut,
    DatasetOut,
    EpochMetricsOut,
    ExperimentOut,
    JobOut,
    ModelOut,
    PresetOut,
    VariantOut,
)


def console(stderr: bool = False) -> Console:
    # Piped output goes to scripts and logs: no id is cut to fit 80 columns there.
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None)


Item = TypeVar("Item", bound=BaseModel)


@dataclass(frozen=True)
class ListColumn(Generic[Item]):
    """A column of a list table: its header, and the text of its cell for one item."""

    header: str
    cell: Callable[[Item], str]
    numeric: bool = False


def list_table(items: Sequence[Item], columns: Sequence[ListColumn[Item]], **options: Any) -> Table:
    """One row per item; `options` (title, caption...) go to the rich Table."""
    headers = [Column(column.header, justify="right" if column.numeric else "left") for column in columns]
    table = Table(*headers, **options)
    for item in items:
        table.add_row(*(column.cell(item) for column in columns))
    return table


def show_list(items: Sequence[Item], as_json: bool, columns: Sequence[ListColumn[Item]], **options: Any) -> None:
    """What every `ls` command prints: the API's JSON list with --json, else a table of `columns`."""
    show(list(items), as_json, lambda: list_table(items, columns, **options))


def show(value: BaseModel | list[BaseModel], as_json: bool, for_people: Callable[[], RenderableType]) -> None:
    """`value` as the API's JSON with --json, else as `for_people()` draws it."""
    if as_json:
        print_json(value)
    else:
        console().print(for_people())


def print_json(value: BaseModel | list[BaseModel] | list[dict[str, Any]] | dict[str, Any]) -> None:
    def plain(item: Any) -> Any:
        return item.model_dump(mode="json") if isinstance(item, BaseModel) else item

    data = [plain(item) for item in value] if isinstance(value, list) else plain(value)
    print(json.dumps(data, indent=2))


def when(moment: datetime | None) -> str:
    """In the reader's time zone; the API answers in UTC."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def numeric(*headers: str) -> list[Column]:
    return [Column(header, justify="right") for header in headers]


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    """A learning rate, in 4 significant digits: schedules take it through many orders of magnitude."""
    return "-" if value is None else f"{value:.4g}"


def metrics_table(metrics: list[EpochMetricsOut]) -> Table:
    headers = numeric("epoch", "train loss", "train acc", "val loss", "val acc", "seconds", "lr")
    table = Table(*headers, title="metrics per epoch")
    for m in metrics:
        figures = map(number, (m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy))
        table.add_row(str(m.epoch), *figures, number(m.seconds, 3), rate(m.learning_rate))
    return table


def activations_table(activations: ActivationsOut) -> Table:
    """One row per tracked layer and measured step: the percentiles, mean and std of the non-linearity's inputs."""
    table = Table("layer", *numeric("step", "p15", "p50", "p85", "mean", "std"), title="inputs to each non-linearity")
    for layer in activations.layers:
        for index, step in enumerate(layer.steps):
            values = (layer.p15, layer.p50, layer.p85, layer.mean, layer.std)
            table.add_row(layer.name, str(step), *(number(series[index]) for series in values))
    return table


CREATED: ListColumn[Any] = ListColumn("created", lambda record: when(record.created_at))
JOB_COLUMNS: list[ListColumn[JobOut]] = [
    ListColumn("id", lambda job: job.id),
    ListColumn("name", lambda job: job.name),
    ListColumn("status", lambda job: job.status),
    ListColumn("epoch", lambda job: f"{job.progress.epoch}/{job.progress.epochs}", numeric=True),
    ListColumn("val acc", lambda job: number(job.metrics[-1].val_accuracy if job.metrics else None), numeric=True),
    CREATED,
]


def details(rows: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    for key, value in rows.items():
        table.add_row(key, "-" if value is None else str(value))
    return table


def record_details(record: JobOut | ModelOut, rows: dict[str, Any]) -> Table:
    """A job's or a model's details: its id and name first, then `rows`."""
    return details({"id": record.id, "name": record.name, **rows})


def job_details(job: JobOut) -> Table:
    spec = job.spec
    return record_details(
        job,
        {
            "status": job.status,
            "progress": f"epoch {job.progress.epoch}/{job.progress.epochs}",
            "dataset": spec.dataset.name or spec.dataset.id,
            "model": architecture(spec.model),
            "training": f"{spec.training.optimizer} lr={spec.training.learning_rate} batch={spec.training.batch_size} "
            f"seed={spec.training.seed} schedule={spec.training.schedule.kind}",
            "created": when(job.created_at),
            "started": when(job.started_at),
            "finished": when(job.finished_at),
            "device": job.device,
            "worker": job.worker,
            "workers": ", ".join(job.workers) if len(job.workers) > 1 else None,
            "devices": ", ".join(job.devices) if len(job.devices) > 1 else None,
            "world size": job.world_size,
            "attempts": job.attempts,
            "model id": job.model_id,
            "best epoch": job.best_epoch,
            "error": f"{job.error.code}: {job.error.message}" if job.error else None,
            "warnings": "\n".join(job.warnings) or None,
        },
    )


def architecture(model: ModelSpec) -> str:
    """e.g. `mlp [100, 100, 100] relu batchnorm`."""
    if model.architecture == "resnet":
        return f"resnet-{model.depth} width={model.width} {model.activation} {model.normalization}"
    sizes = model.hidden_sizes if model.architecture == "mlp" else model.channels
    return f"{model.architecture} {sizes} {model.activation} {model.normalization}"


MODEL_COLUMNS: list[ListColumn[ModelOut]] = [
    ListColumn("id", lambda model: model.id),
    ListColumn("name", lambda model: model.name),
    ListColumn("dataset", lambda model: model.dataset),
    ListColumn("model", lambda model: architecture(model.spec.model)),
    ListColumn("parameters", lambda model: f"{model.parameter_count:,}", numeric=True),
    ListColumn("val acc", lambda model: number(model.final_metrics.val_accuracy), numeric=True),
    CREATED,
]


def model_details(model: ModelOut) -> Table:
    final = model.final_metrics
    return record_details(
        model,
        {
            "job": model.job_id,
            "created": when(model.created_at),
            "dataset": model.dataset,
            "model": architecture(model.spec.model),
            "input shape": model.input_shape,
            "classes": model.num_classes,
            "parameters": f"{model.parameter_count:,}",
            "final metrics": f"epoch {final.epoch}: val acc {number(final.val_accuracy)}, val loss {number(final.val_loss)}",
            "served": f"BN folded into {', '.join(model.serving.folded_layers)}" if model.serving.folded else "BN unfolded",
            "parent": model.parent_id,
            "sha256": model.artifact_sha256,
        },
    )


DATASET_COLUMNS: list[ListColumn[DatasetOut]] = [  # built-ins are named by `name` in a job, uploads by `id`
    ListColumn("name", lambda dataset: dataset.name),
    ListColumn("id", lambda dataset: dataset.id or "-"),
    ListColumn("source", lambda dataset: dataset.source),
    ListColumn("input shape", lambda dataset: str(dataset.input_shape)),
    ListColumn("classes", lambda dataset: str(dataset.num_classes), numeric=True),
    ListColumn("samples", lambda dataset: str(dataset.num_samples), numeric=True),
    CREATED,
]


def layer_summary(layer: BatchNormLayerOut) -> dict[str, Any]:
    """One layer in a line: how far γ, β and the running statistics are from their initial 1, 0, 0, 1.

    GroupNorm and LayerNorm layers keep no running statistics: theirs are None.
    """
    gamma, beta = np.asarray(layer.gamma), np.asarray(layer.beta)
    statistics = layer.running_mean is not None and layer.running_var is not None
    mean, var = np.asarray(layer.running_mean or [np.nan]), np.asarray(layer.running_var or [np.nan])

    def stat(value: np.floating) -> float | None:
        return float(value) if statistics else None

    return {
        "name": layer.name,
        "kind": layer.kind,
        "features": layer.num_features,
        "gamma_mean": float(gamma.mean()),
        "gamma_min": float(gamma.min()),
        "gamma_max": float(gamma.max()),
        "beta_mean": float(beta.mean()),
        "beta_min": float(beta.min()),
        "beta_max": float(beta.max()),
        "running_mean_mean": stat(mean.mean()),
        "running_mean_std": stat(mean.std()),
        "running_var_mean": stat(var.mean()),
        "running_var_min": stat(var.min()),
        "running_var_max": stat(var.max()),
    }


BN_COLUMNS = {
    "layer": "name",
    "features": "features",
    "γ mean": "gamma_mean",
    "γ min": "gamma_min",
    "γ max": "gamma_max",
    "β mean": "beta_mean",
    "β min": "beta_min",
    "β max": "beta_max",
    "μ mean": "running_mean_mean",
    "μ std": "running_mean_std",
    "σ² mean": "running_var_mean",
    "σ² min": "running_var_min",
    "σ² max": "running_var_max",
}


def bn_table(model_id: str, summaries: list[dict[str, Any]]) -> Table:
    headers = list(BN_COLUMNS)
    table = Table(headers[0], *numeric(*headers[1:]), title=f"{model_id}: BN layers (μ, σ²: running mean and variance)")
    for summary in summaries:
        name = summary["name"] if summary["kind"] == "batchnorm" else f"{summary['name']} ({summary['kind']})"
        table.add_row(name, str(summary["features"]), *(number(summary[key]) for key in list(BN_COLUMNS.values())[2:]))
    return table


VARIANT_COLUMNS: list[ListColumn[VariantOut]] = [
    ListColumn("variant", lambda variant: variant.name),
    ListColumn("job", lambda variant: variant.job_id),
    ListColumn("status", lambda variant: variant.status),
    ListColumn("final val acc", lambda variant: number(variant.final_val_accuracy), numeric=True),
    ListColumn("best val acc", lambda variant: number(variant.best_val_accuracy), numeric=True),
    ListColumn(
        "epochs to target",
        lambda variant: "-" if variant.epochs_to_target is None else str(variant.epochs_to_target),
        numeric=True,
    ),
    ListColumn("diverged", lambda variant: "yes" if variant.diverged else "no"),
]


def experiment_table(experiment: ExperimentOut) -> Table:
    target = f", target val acc {experiment.target_accuracy}" if experiment.target_accuracy is not None else ""
    title = f"{experiment.name} ({experiment.status}{target})"
    return list_table(
        experiment.variants, VARIANT_COLUMNS, title=title, caption=claim_caption(experiment), caption_justify="left"
    )


def claim_caption(experiment: ExperimentOut) -> str | None:
    """A preset's verdict under its table: the statement, HELD or NOT HELD, and the evidence."""
    claim = experiment.claim
    if claim is None:
        return f"claim: judged once every variant ended (preset {experiment.preset})" if experiment.preset else None
    evidence = "\n".join(f"  {key}: {json.dumps(value)}" for key, value in claim.evidence.items())
    return f"claim {'HELD' if claim.held else 'NOT HELD'}: {claim.statement}\n{evidence}"


PRESET_COLUMNS: list[ListColumn[PresetOut]] = [
    ListColumn("preset", lambda preset: preset.name),
    ListColumn("variants", lambda preset: str(len(preset.request["variants"])), numeric=True),
    ListColumn("claim", lambda preset: preset.claim["statement"]),
]
PRESETS_TITLE = "presets: bnjobs experiment --preset NAME --watch"


def best_variant(experiment: ExperimentOut) -> VariantOut | None:
    """The variant with the highest best validation accuracy, once any has one."""
    scored = [v for v in experiment.variants if v.best_val_accuracy is not None]
    return max(scored, key=lambda v: v.best_val_accuracy or 0.0, default=None)


def best_variant_name(experiment: ExperimentOut) -> str:
    best = best_variant(experiment)
    return best.name if best else "-"


def best_variant_accuracy(experiment: ExperimentOut) -> str:
    best = best_variant(experiment)
    return number(best.best_val_accuracy if best else None)


EXPERIMENT_COLUMNS: list[ListColumn[ExperimentOut]] = [
    ListColumn("id", lambda experiment: experiment.id),
    ListColumn("name", lambda experiment: experiment.name),
    ListColumn("status", lambda experiment: experiment.status),
    ListColumn("variants", lambda experiment: str(len(experiment.variants)), numeric=True),
    ListColumn("best variant", best_variant_name),
    ListColumn("best val acc", best_variant_accuracy, numeric=True),
    CREATED,
]
