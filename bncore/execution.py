"""Run one training job: the worker's whole job, from queued record to stored model."""

import logging
import time
from collections.abc import Callable

import torch

from bncore.artifacts import ArtifactStore
from bncore.datasets import load_dataset, prepare_data
from bncore.devices import training_device
from bncore.job_store import JobStore
from bncore.model_store import ModelStore, new_model_id
from bncore.networks import build_network
from bncore.specs import JobSpec
from bncore.trained_model import TrainedModel
from bncore.training import EpochMetrics, TrainingCancelled, TrainingDiverged, train

log = logging.getLogger(__name__)


def _throttled(check: Callable[[], bool], every_seconds: float) -> Callable[[], bool]:
    """`check` asked at most once per interval; a training step is far cheaper than a database read."""
    last = time.monotonic()

    def throttled() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < every_seconds:
            return False
        last = now
        return check()

    return throttled


def train_model(spec: JobSpec, device: torch.device, **callbacks: Callable) -> tuple[TrainedModel, list[EpochMetrics]]:
    """Seeded end to end: the same spec on the same device gives the same weights."""
    dataset = load_dataset(spec.dataset.name)
    input_shape = tuple(spec.model.input_shape or dataset.info.input_shape)
    data = prepare_data(dataset, input_shape, spec.training.validation_fraction, spec.training.seed).to(device)
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, input_shape).to(device)
    history = train(network, data, spec.training, **callbacks)
    network.eval()
    return TrainedModel(spec, network.cpu(), data.input_mean.cpu(), data.input_std.cpu()), history


def run_job(
    job_id: str, jobs: JobStore, models: ModelStore, artifacts: ArtifactStore,
    worker: str, cancel_poll_seconds: float = 1.0,
) -> None:
    """Claim the job, train, store the artifact then the model record, and mark the job succeeded.

    A job that is no longer queued (cancelled, or already run) is left alone.
    """
    device = training_device()
    if not jobs.start(job_id, str(device), worker):
        log.info("job %s is not queued; skipping", job_id)
        return
    spec = JobSpec.model_validate(jobs.get(job_id).spec)
    try:
        trained, history = train_model(
            spec, device,
            on_epoch=lambda metrics: jobs.record_epoch(job_id, metrics),
            should_stop=_throttled(lambda: jobs.is_cancel_requested(job_id), cancel_poll_seconds),
        )
    except TrainingCancelled:
        jobs.mark_cancelled(job_id)
        return
    except TrainingDiverged as error:
        jobs.fail(job_id, "diverged", str(error))
        return
    except Exception as error:
        log.exception("job %s failed", job_id)
        jobs.fail(job_id, "internal_error", f"{type(error).__name__}: {error}")
        return
    model_id = new_model_id()
    sha256 = artifacts.save(model_id, trained.to_tensors(), trained.metadata())
    parameters = sum(p.numel() for p in trained.network.parameters())
    models.add(model_id, job_id, spec, history[-1].__dict__, parameters, sha256)
    jobs.succeed(job_id, model_id)
