"""One-request reproductions: a preset expanded into an experiment request, and its claim judged once
every variant's job ended."""

import copy
from collections.abc import Mapping
from typing import Any

from bncore.data.builtin import PreparedData, prepare_data, split_indices
from bncore.data.catalog import DatasetCatalog
from bncore.errors import InvalidField
from bncore.jobs.claims import EVALUATORS, VariantOutcome
from bncore.jobs.experiments import ExperimentRequest
from bncore.jobs.presets import Preset, presets
from bncore.specs import DatasetRef, JobSpec
from bncore.storage.experiment_store import Experiment
from bncore.storage.job_store import JobRecord
from bncore.storage.wiring import Stores
from bncore.training.schedules import steps_per_epoch
from bncore.training.trained_model import TrainedModel


def find_preset(name: str) -> Preset:
    try:
        return presets()[name]
    except KeyError:
        raise InvalidField("preset", f"no preset '{name}'; expected one of {', '.join(presets())}") from None


def preset_request(preset: Preset, epochs: int | None, dataset: DatasetRef | None, datasets: DatasetCatalog) -> ExperimentRequest:
    """The preset's experiment, trained for `epochs` and on `dataset` where given (its classes counted for the head)."""
    request: dict[str, Any] = copy.deepcopy(preset.request)
    base = request["base"]
    suffix = []
    if epochs is not None:
        base.setdefault("training", {})["epochs"] = epochs
        suffix.append(f"{epochs} epochs")
    if dataset is not None:
        base["dataset"] = dataset.model_dump(mode="json")
        base["model"]["num_classes"] = datasets.info(dataset).num_classes
        suffix.append(dataset.name or str(dataset.id))
    if suffix:
        request["name"] = f"{request['name']} ({', '.join(suffix)})"
    return ExperimentRequest.model_validate(request)


def _outcome(job: JobRecord, stores: Stores) -> VariantOutcome:
    spec = JobSpec.model_validate(job.spec)
    training = spec.training
    info = stores.datasets.info(spec.dataset)
    train_samples = len(split_indices(info.num_samples, training.validation_fraction, training.seed)[0])

    def trained() -> tuple[TrainedModel, PreparedData]:
        model = stores.models.get(str(job.model_id))
        network = TrainedModel.from_tensors(spec, stores.artifacts.load(model.id, model.artifact_sha256))
        shape = tuple(spec.model.input_shape or info.input_shape)
        return network, prepare_data(stores.datasets.load(spec.dataset), shape, training.validation_fraction, training.seed)

    return VariantOutcome(
        metrics=list(job.metrics),
        status=job.status,
        diverged=job.error is not None and job.error.code == "diverged",
        steps_per_epoch=steps_per_epoch(train_samples, training.batch_size),
        trained=trained if job.model_id is not None else None,
    )


def judge_claim(experiment: Experiment, jobs: Mapping[str, JobRecord], stores: Stores) -> dict[str, Any]:
    """{"statement", "held", "evidence"} of a finished preset experiment; `jobs` by variant name."""
    preset = find_preset(str(experiment.preset))
    claim = preset.claim
    outcomes = {name: _outcome(job, stores) for name, job in jobs.items()}
    verdict = EVALUATORS[claim["kind"]](outcomes, claim.get("params", {}), experiment.target_accuracy)
    return {"statement": claim["statement"], "held": verdict.held, "evidence": verdict.evidence}
