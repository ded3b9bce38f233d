"""Run one training job: the worker's whole job, from queued record to stored model.

A job killed with its worker is picked up again (see bncore.jobs.recovery) and goes on from its last
epoch checkpoint, so the model is the one an uninterrupted run would have produced.
"""

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch

from bncore.data.builtin import PreparedData, prepare_data
from bncore.data.catalog import BUILT_INS, DatasetCatalog
from bncore.errors import ArtifactUnavailable, DatasetUnavailable
from bncore.jobs.background import EpochRecorder, heartbeat
from bncore.jobs.dispatch import Dispatch, JoinRequest
from bncore.jobs.recalibration import recalibrate
from bncore.specs import JobSpec, Recalibration
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.job_store import JobStore, Lease, LeaseLost
from bncore.storage.model_store import new_model_id
from bncore.storage.wiring import Stores
from bncore.training.checkpoints import Checkpoint
from bncore.training.data_parallel import Gang, GangFailed, GangIncomplete, free_port, train_data_parallel
from bncore.training.devices import training_device
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.loop import TrainingDiverged, TrainingInterrupted, TrainingResult, train
from bncore.training.networks import build_network
from bncore.training.trained_model import TrainedModel

log = logging.getLogger(__name__)


class JobCancelled(TrainingInterrupted):
    pass


class JobTimedOut(TrainingInterrupted):
    pass


@dataclass(frozen=True)
class RunLimits:
    """A worker's limits, named as the settings they come from (`from_settings(RunLimits, settings)`)."""

    job_time_limit_seconds: float
    heartbeat_seconds: float
    cancel_poll_seconds: float  # how often a running job looks for a cancel request
    checkpoint_seconds: float  # the least time between two checkpoints; 0: after every epoch
    gang_join_timeout_seconds: int  # for every worker of a job spanning several to join its gang
    gang_host: str  # this worker's address, as the other workers of such a gang reach it
    metrics_seconds: float = 0.5  # the least time between two writes of epoch metrics (EpochRecorder); no setting


@dataclass(frozen=True)
class _Claimed:
    """A job this worker holds, as its work sees it: whose it is, where it goes, and how it learns to stop."""

    lease: Lease
    owner: str | None
    stores: Stores
    lost: threading.Event  # set once the heartbeat finds the job is no longer this worker's
    interrupt: Callable[[], None]  # called between steps: raises when the job must stop
    worker: str = "unknown"
    dispatch: Dispatch | None = None  # how to reach other workers: for a job spanning several


def prepared(spec: JobSpec, datasets: DatasetCatalog) -> tuple[PreparedData, tuple[int, ...]]:
    dataset = datasets.load(spec.dataset)
    input_shape = tuple(spec.model.input_shape or dataset.info.input_shape)
    return prepare_data(dataset, input_shape, spec.training.validation_fraction, spec.training.seed), input_shape


def train_model(
    spec: JobSpec, device: torch.device, datasets: DatasetCatalog = BUILT_INS, **callbacks: Callable
) -> tuple[TrainedModel, TrainingResult]:
    """Seeded end to end: the same spec on the same device gives the same weights."""
    data, input_shape = prepared(spec, datasets)
    data = data.to(device)
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, input_shape, for_training=True).to(device)
    result = train(network, data, spec.training, **callbacks)
    network.eval()
    return TrainedModel(spec, network.cpu(), data.input_mean.cpu(), data.input_std.cpu()), result


def train_model_data_parallel(
    spec: JobSpec, gang: Gang, datasets: DatasetCatalog = BUILT_INS, **callbacks: Callable
) -> tuple[TrainedModel, TrainingResult]:
    """`train_model` on a gang of processes; with `model.bn_sync` `global`, the model one process would train."""
    data, input_shape = prepared(spec, datasets)
    state, result = train_data_parallel(spec, data, gang, **callbacks)
    network = build_network(spec.model, input_shape)
    network.load_state_dict(state)
    network.eval()
    return TrainedModel(spec, network, data.input_mean, data.input_std), result


def _interrupt(lease: Lease, jobs: JobStore, limits: RunLimits, lost: threading.Event) -> Callable[[], None]:
    """Between two steps: stop on a lost lease, past the time limit or on a cancel request.

    The database is asked at most once per poll interval: a step is far cheaper than a query.
    """
    started = last_poll = time.monotonic()

    def interrupt() -> None:
        nonlocal last_poll
        if lost.is_set():
            raise LeaseLost(lease)
        now = time.monotonic()
        if now - last_poll < limits.cancel_poll_seconds:
            return
        last_poll = now
        if now - started > limits.job_time_limit_seconds:
            raise JobTimedOut()
        if jobs.is_cancel_requested(lease.job_id):
            raise JobCancelled()

    return interrupt


def stored_checkpoint(checkpoints: ArtifactStore, job_id: str) -> Checkpoint | None:
    if not checkpoints.exists(job_id):
        return None
    try:
        tensors, metadata = checkpoints.load_with_metadata(job_id)
        return Checkpoint.from_stored(tensors, metadata)
    except (ArtifactUnavailable, KeyError, ValueError):
        log.warning("checkpoint of job %s is unreadable; starting it from scratch", job_id)
        return None


def run_job(job_id: str, stores: Stores, worker: str, limits: RunLimits, dispatch: Dispatch | None = None) -> None:
    """Claim the job, then train it (from its checkpoint if an earlier attempt left one) or recalibrate
    its parent model, and store the model.

    Both kinds run under the same guard: a heartbeat, the lease, the time limit and cancel requests.
    A job that is not queued (cancelled, finished, or running elsewhere) is left alone, so a message
    delivered twice runs the job once. A job spanning several workers needs `dispatch`, to send join
    tasks to the others and to queue itself again when they do not all join (bncore.jobs.gangs).
    """
    jobs = stores.jobs
    device = training_device()
    lease = jobs.start(job_id, str(device), worker)
    if lease is None:
        log.info("job %s is not queued; skipping", job_id)
        return
    job = jobs.get(job_id)
    if job.recalibration is None:
        spec = JobSpec.model_validate(job.spec)
        if spec.training.time_limit_seconds is not None:
            limits = replace(limits, job_time_limit_seconds=min(limits.job_time_limit_seconds, spec.training.time_limit_seconds))
        work = partial(_train, spec, device, _resume_point(lease, stores), limits)
    else:
        work = partial(_recalibrate, Recalibration.model_validate(job.recalibration))
    try:
        with heartbeat(lambda: jobs.heartbeat(lease), limits.heartbeat_seconds) as lost:
            work(_Claimed(lease, job.owner, stores, lost, _interrupt(lease, jobs, limits, lost), worker, dispatch))
    except GangIncomplete as error:
        # Frees this worker, and the members that joined (their launchers gave up too), for other jobs.
        log.warning("job %s: %s; queueing it again", job_id, error)
        if jobs.requeue_incomplete(lease) and dispatch is not None:
            dispatch.send_job(job_id, JobSpec.model_validate(job.spec).resources.device)
        return
    except LeaseLost:
        # Another worker has the job now (and goes on from the checkpoint, if any): leave both alone.
        log.warning("job %s was queued again while this worker ran it; stopping", job_id)
        return
    except GangFailed as error:
        if error.lost:
            # As if this worker had been lost: no more heartbeats, so recovery queues the job again and the
            # next attempt goes on from the checkpoint.
            log.warning("job %s lost a process of its gang: %s; leaving it to recovery", job_id, error)
            return
        log.error("job %s failed in its gang: %s", job_id, error)
        jobs.fail(job_id, "internal_error", str(error), lease)
    except JobCancelled:
        jobs.mark_cancelled(lease)
    except JobTimedOut:
        jobs.fail(job_id, "timeout", f"the job ran past its time limit of {limits.job_time_limit_seconds:g} s", lease)
    except TrainingDiverged as error:
        jobs.fail(job_id, "diverged", str(error), lease)
    except DatasetUnavailable as error:
        jobs.fail(job_id, error.code, error.message, lease)
    except Exception as error:
        log.exception("job %s failed", job_id)
        jobs.fail(job_id, "internal_error", f"{type(error).__name__}: {error}", lease)
    stores.checkpoints.delete(job_id)


def _resume_point(lease: Lease, stores: Stores) -> Checkpoint | None:
    """The checkpoint an earlier attempt left, with its epochs' metrics recorded again."""
    checkpoint = stored_checkpoint(stores.checkpoints, lease.job_id)
    if checkpoint is not None:
        stores.jobs.mark_resumed(lease, checkpoint.epoch)
        # The lost attempt may have died before it wrote the metrics of the epochs it had checkpointed.
        stores.jobs.record_epochs(lease, list(checkpoint.history))
    return checkpoint


def _train(spec: JobSpec, device: torch.device, checkpoint: Checkpoint | None, limits: RunLimits, job: _Claimed) -> None:
    """Train, checkpointing at most every `checkpoint_seconds`, each epoch's metrics written by the recorder."""
    lease, stores = job.lease, job.stores
    if spec.resources.world_size > 1:
        _train_data_parallel(spec, device, checkpoint, limits, job)
        return
    with EpochRecorder(partial(stores.jobs.record_epochs, lease), job.lost, limits.metrics_seconds) as recorder:
        last_checkpoint = time.monotonic()

        def after_epoch(metrics: EpochMetrics, capture: Callable[[], Checkpoint]) -> None:
            nonlocal last_checkpoint
            # None after the last epoch: the model is stored next. Saved before the epoch's metrics are
            # recorded, so with CHECKPOINT_SECONDS=0 the progress shown is always an epoch it can resume from.
            if metrics.epoch < spec.training.epochs and time.monotonic() - last_checkpoint >= limits.checkpoint_seconds:
                saved = capture()
                stores.checkpoints.save(lease.job_id, saved.tensors, saved.metadata)
                last_checkpoint = time.monotonic()
            recorder.record(metrics)

        trained, result = train_model(
            spec, device, stores.datasets, on_epoch=after_epoch, interrupt=job.interrupt, resume=checkpoint
        )
        recorder.flush()
        _store_model(lease, job.owner, trained, result.kept.quality(), stores, best_epoch=result.best_epoch)


def _train_data_parallel(
    spec: JobSpec, device: torch.device, checkpoint: Checkpoint | None, limits: RunLimits, job: _Claimed
) -> None:
    """Train on `resources.processes` processes of each of `resources.workers` workers, this one as member 0:
    rank 0 decides when to checkpoint, this process saves and records."""
    lease, stores = job.lease, job.stores
    gang = _gather(spec, device, limits, job)
    with EpochRecorder(partial(stores.jobs.record_epochs, lease), job.lost, limits.metrics_seconds) as recorder:

        def after_epoch(metrics: EpochMetrics, saved: Checkpoint | None) -> None:
            if saved is not None:
                stores.checkpoints.save(lease.job_id, saved.tensors, saved.metadata)
            recorder.record(metrics)

        try:
            trained, result = train_model_data_parallel(
                spec, gang, stores.datasets, on_epoch=after_epoch, interrupt=job.interrupt, resume=checkpoint
            )
        except GangFailed as error:
            if gang.members == 1:
                raise
            # A process of another worker may have died, which this worker sees only as its own ranks' errors:
            # leave the attempt to recovery as a lost one, to resume from the checkpoint (at most MAX_ATTEMPTS times).
            raise GangFailed(str(error), lost=True) from error
        recorder.flush()
        _store_model(lease, job.owner, trained, result.kept.quality(), stores, best_epoch=result.best_epoch)


def _gather(spec: JobSpec, device: torch.device, limits: RunLimits, job: _Claimed) -> Gang:
    """The gang of this attempt; across workers, its endpoint published and one join task sent per other member."""
    lease, workers = job.lease, spec.resources.workers
    run_id = f"{lease.job_id}-{lease.attempt}"
    if workers == 1:
        return Gang(spec.resources.processes, run_id, limits.checkpoint_seconds)
    if job.dispatch is None:
        raise GangFailed("a job spanning several workers needs a worker that can send join tasks", lost=False)
    endpoint = f"{limits.gang_host}:{free_port()}"
    if not job.stores.jobs.gather(lease, endpoint, job.worker, str(device)):
        raise LeaseLost(lease)
    for member in range(1, workers):
        job.dispatch.send_join(JoinRequest(lease.job_id, lease.attempt, member), spec.resources.device, 0)
    # Up to half as long again, at random: two gangs that started gathering together do not give up together,
    # so the first to requeue frees its worker for the other's join task before both are taken again.
    join_timeout = round(limits.gang_join_timeout_seconds * random.uniform(1.0, 1.5))
    return Gang(
        spec.resources.processes,
        run_id,
        limits.checkpoint_seconds,
        members=workers,
        endpoint=endpoint,
        join_timeout_seconds=join_timeout,
        host=limits.gang_host,
    )


def _recalibrate(recalibration: Recalibration, job: _Claimed) -> None:
    """Population statistics for the parent model's BN layers, stored as a new model that names its parent."""
    stores = job.stores
    parent = stores.models.get(recalibration.parent_model_id)
    trained = TrainedModel.from_tensors(parent.spec, stores.artifacts.load(parent.id, parent.artifact_sha256))
    model, validation = recalibrate(trained, recalibration, stores.datasets, job.interrupt)
    _store_model(job.lease, job.owner, model, parent.final_metrics | validation, stores, parent_id=parent.id)


def _store_model(
    lease: Lease,
    owner: str | None,
    trained: TrainedModel,
    final_metrics: dict[str, float],
    stores: Stores,
    parent_id: str | None = None,
    best_epoch: int | None = None,
) -> None:
    """Artifact, then model record, then the job: no model is ever listed without its weights."""
    model_id = new_model_id()
    sha256 = stores.artifacts.save(model_id, trained.to_tensors(), trained.metadata())
    parameters = sum(p.numel() for p in trained.network.parameters())
    stores.models.add(model_id, lease.job_id, trained.spec, final_metrics, parameters, sha256, owner, parent_id)
    if not stores.jobs.succeed(lease, model_id, best_epoch):
        stores.models.delete(model_id)
        stores.artifacts.delete(model_id)
        raise LeaseLost(lease)
