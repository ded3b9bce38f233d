"""Experiments: one base job and its variants, run side by side to measure what BN changes.

The paper's claims become a table: with and without BN, at several learning rates, with sigmoid
or ReLU, against SELU without BN; each variant a job with the same seed and data.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bncore.errors import Conflict, InvalidField
from bncore.free_text import OneLine
from bncore.specs import DatasetRef, JobSpec
from bncore.storage.experiment_store import Experiment
from bncore.storage.job_store import FINISHED, JobRecord, JobStore


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OneLine = Field(min_length=1, max_length=100)
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='deep-merged into `base`, e.g. {"model": {"normalization": "none"}}; '
        "a `dataset.name` or `dataset.id` here replaces the base's dataset",
    )


class ExperimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: OneLine = Field(min_length=1, max_length=255)
    base: dict[str, Any] = Field(description="a job request, as for POST /v1/jobs")
    variants: list[Variant] = Field(min_length=1, max_length=16)
    target_accuracy: float | None = Field(None, gt=0, le=1, description="for `epochs_to_target`")

    @field_validator("variants")
    @classmethod
    def _distinct_names(cls, variants: list[Variant]) -> list[Variant]:
        names = [variant.name for variant in variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be distinct")
        return variants


class ExperimentBody(BaseModel):
    """POST /v1/experiments: either `name`, `base` and `variants` (and `target_accuracy`), or a `preset`
    (optionally shortened with `epochs` or moved to another `dataset`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: OneLine | None = Field(None, min_length=1, max_length=255)
    base: dict[str, Any] | None = Field(None, description="a job request, as for POST /v1/jobs")
    variants: list[Variant] | None = Field(None, min_length=1, max_length=16)
    target_accuracy: float | None = Field(None, gt=0, le=1, description="for `epochs_to_target`")
    preset: OneLine | None = Field(
        None, min_length=1, max_length=64, description="a reproduction from GET /v1/experiments/presets, e.g. `faster-training`"
    )
    epochs: int | None = Field(None, ge=1, le=1000, description="with `preset`: train every variant this many epochs")
    dataset: DatasetRef | None = Field(None, description="with `preset`: train on this dataset instead of the preset's")

    @field_validator("variants")
    @classmethod
    def _distinct_names(cls, variants: list[Variant] | None) -> list[Variant] | None:
        return ExperimentRequest._distinct_names(variants) if variants is not None else None

    @model_validator(mode="after")
    def _one_kind(self) -> "ExperimentBody":
        custom = {"name": self.name, "base": self.base, "variants": self.variants, "target_accuracy": self.target_accuracy}
        if self.preset is not None:
            given = [field for field, value in custom.items() if value is not None]
            if given:
                raise ValueError(f"a preset brings its own experiment: give `preset` without {', '.join(given)}")
            return self
        for field in ("epochs", "dataset"):
            if getattr(self, field) is not None:
                raise ValueError(f"`{field}` goes with `preset`; without one, set it in `base`")
        missing = [field for field in ("name", "base", "variants") if custom[field] is None]
        if missing:
            raise ValueError(f"give `{'`, `'.join(missing)}`, or a `preset`")
        return self

    def custom(self) -> ExperimentRequest:
        """The request of an experiment without a preset."""
        return ExperimentRequest(name=self.name, base=self.base, variants=self.variants, target_accuracy=self.target_accuracy)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


DATASET_SOURCES = frozenset({"name", "id"})


def variant_request(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` deep-merged into `base`; a variant that names its dataset replaces the base's,
    so `{"dataset": {"name": "iris"}}` on a base with `dataset.id` means iris rather than both."""
    merged = deep_merge(base, overrides)
    named = overrides.get("dataset")
    if isinstance(named, dict) and DATASET_SOURCES & named.keys() and isinstance(merged.get("dataset"), dict):
        replaced = DATASET_SOURCES - named.keys()
        merged["dataset"] = {key: value for key, value in merged["dataset"].items() if key not in replaced}
    return merged


def variant_specs(request: ExperimentRequest, plan: Callable[[JobSpec], JobSpec]) -> list[JobSpec]:
    """Each variant's planned job spec; InvalidField names the variant and field at fault."""
    specs = []
    for index, variant in enumerate(request.variants):
        where = f"variants[{index}].overrides"
        try:
            spec = JobSpec.model_validate(variant_request(request.base, variant.overrides))
        except ValidationError as error:
            first = error.errors()[0]
            raise InvalidField(".".join([where, *map(str, first["loc"])]), first["msg"]) from None
        try:
            specs.append(plan(spec))
        except InvalidField as error:
            raise InvalidField(f"{where}.{error.field}", error.detail) from None
    return specs


@dataclass(frozen=True)
class VariantResult:
    name: str
    job_id: str
    status: str
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    epochs_to_target: int | None
    diverged: bool

    @classmethod
    def of(cls, name: str, job: JobRecord, target: float | None) -> "VariantResult":
        accuracies = [m.val_accuracy for m in job.metrics]
        reached = [m.epoch for m in job.metrics if target is not None and m.val_accuracy >= target]
        return cls(
            name=name,
            job_id=job.id,
            status=job.status,
            final_val_accuracy=accuracies[-1] if accuracies else None,
            best_val_accuracy=max(accuracies, default=None),
            epochs_to_target=reached[0] if reached else None,
            diverged=job.error is not None and job.error.code == "diverged",
        )


def variant_results(experiment: Experiment, job: Callable[[str], JobRecord]) -> list[VariantResult]:
    """Each variant's result, its job read through `job`."""
    return [VariantResult.of(v["name"], job(v["job_id"]), experiment.target_accuracy) for v in experiment.variants]


def cancel_variants(experiment: Experiment, jobs: JobStore) -> None:
    """Cancel every variant's job that has not ended; Conflict when all of them had ended already."""
    going = [job.id for job in jobs.get_many([v["job_id"] for v in experiment.variants]).values() if job.status not in FINISHED]
    if not going:
        raise Conflict(f"experiment '{experiment.id}' has finished: every variant's job has ended")
    for job_id in going:
        with contextlib.suppress(Conflict):  # it ended meanwhile
            jobs.cancel(job_id)


def experiment_status(results: list[VariantResult]) -> str:
    """`finished` once every variant's job ended (diverging is a result too), `running` while any runs."""
    statuses = {result.status for result in results}
    if statuses <= set(FINISHED):
        return "finished"
    return "queued" if statuses == {"queued"} else "running"
