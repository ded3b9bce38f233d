"""Rich tables of jobs, models, BN layers and experiments, and the JSON the `--json` flags print."""

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
)


def console(stderr: bool = False) -> Console:
    # Piped output goes to scripts and logs: no id is cut to fit 80 columns there.
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=200 if wide else None)


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


def jobs_table(jobs: list[JobOut]) -> Table:
    table = Table("id", "name", "status", *numeric("epoch", "val acc"), "created")
    for job in jobs:
        accuracy = job.metrics[-1].val_accuracy if job.metrics else None
        progress = f"{job.progress.epoch}/{job.progress.epochs}"
        table.add_row(job.id, job.name, job.status, progress, number(accuracy), when(job.created_at))
    return table


def details(rows: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    for key, value in rows.items():
        table.add_row(key, "-" if value is None else str(value))
    return table


def job_details(job: JobOut) -> Table:
    spec = job.spec
    return details(
        {
            "id": job.id,
            "name": job.name,
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
        }
    )


def architecture(model: ModelSpec) -> str:
    """e.g. `mlp [100, 100, 100] relu batchnorm`."""
    if model.architecture == "resnet":
        return f"resnet-{model.depth} width={model.width} {model.activation} {model.normalization}"
    sizes = model.hidden_sizes if model.architecture == "mlp" else model.channels
    return f"{model.architecture} {sizes} {model.activation} {model.normalization}"


def models_table(models: list[ModelOut]) -> Table:
    table = Table("id", "name", "dataset", "model", *numeric("parameters", "val acc"), "created")
    for model in models:
        table.add_row(
            model.id,
            model.name,
            model.dataset,
            architecture(model.spec.model),
            f"{model.parameter_count:,}",
            number(model.final_metrics.val_accuracy),
            when(model.created_at),
        )
    return table


def model_details(model: ModelOut) -> Table:
    final = model.final_metrics
    return details(
        {
            "id": model.id,
            "name": model.name,
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
        }
    )


def datasets_table(datasets: list[DatasetOut]) -> Table:
    """Built-ins are named by `name` in a job, uploads by `id`."""
    table = Table("name", "id", "source", "input shape", *numeric("classes", "samples"), "created")
    for dataset in datasets:
        table.add_row(
            dataset.name,
            dataset.id or "-",
            dataset.source,
            str(dataset.input_shape),
            str(dataset.num_classes),
            str(dataset.num_samples),
            when(dataset.created_at),
        )
    return table


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


def experiment_table(experiment: ExperimentOut) -> Table:
    target = f", target val acc {experiment.target_accuracy}" if experiment.target_accuracy is not None else ""
    table = Table(
        "variant",
        "job",
        "status",
        *numeric("final val acc", "best val acc", "epochs to target"),
        "diverged",
        title=f"{experiment.name} ({experiment.status}{target})",
        caption=claim_caption(experiment),
        caption_justify="left",
    )
    for v in experiment.variants:
        table.add_row(
            v.name,
            v.job_id,
            v.status,
            number(v.final_val_accuracy),
            number(v.best_val_accuracy),
            "-" if v.epochs_to_target is None else str(v.epochs_to_target),
            "yes" if v.diverged else "no",
        )
    return table


def claim_caption(experiment: ExperimentOut) -> str | None:
    """A preset's verdict under its table: the statement, HELD or NOT HELD, and the evidence."""
    claim = experiment.claim
    if claim is None:
        return f"claim: judged once every variant ended (preset {experiment.preset})" if experiment.preset else None
    evidence = "\n".join(f"  {key}: {json.dumps(value)}" for key, value in claim.evidence.items())
    return f"claim {'HELD' if claim.held else 'NOT HELD'}: {claim.statement}\n{evidence}"


def presets_table(presets: list[PresetOut]) -> Table:
    table = Table("preset", *numeric("variants"), "claim", title="presets: bnjobs experiment --preset NAME --watch")
    for preset in presets:
        table.add_row(preset.name, str(len(preset.request["variants"])), preset.claim["statement"])
    return table


def experiments_table(experiments: list[ExperimentOut]) -> Table:
    """One row per experiment; its best variant is the one with the highest best validation accuracy."""
    table = Table("id", "name", "status", *numeric("variants"), "best variant", *numeric("best val acc"), "created")
    for experiment in experiments:
        scored = [v for v in experiment.variants if v.best_val_accuracy is not None]
        best = max(scored, key=lambda v: v.best_val_accuracy or 0.0, default=None)
        table.add_row(
            experiment.id,
            experiment.name,
            experiment.status,
            str(len(experiment.variants)),
            best.name if best else "-",
            number(best.best_val_accuracy if best else None),
            when(experiment.created_at),
        )
    return table
