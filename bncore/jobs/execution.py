"""Run one training job: the worker's whole job, from queued record to stored model.

A job killed with its worker is picked up again (see bncore.jobs.recovery) and goes on from its last
epoch checkpoint, so the model is the one an uninterrupted run would have produced.
"""

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from bncore.data.builtin import prepare_data
from bncore.data.catalog import BUILT_INS, DatasetCatalog
from bncore.errors import ArtifactUnavailable, DatasetUnavailable
from bncore.jobs.recalibration import recalibrate
from bncore.specs import JobSpec, Recalibration
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.job_store import JobRecord, JobStore, Lease, LeaseLost
from bncore.storage.model_store import ModelStore, new_model_id
from bncore.training.checkpoints import Checkpoint
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
    time_limit_seconds: float = 3600.0
    heartbeat_seconds: float = 5.0
    control_poll_seconds: float = 1.0  # how often a running job looks for a cancel request
    checkpoint_seconds: float = 30.0  # the least time between two checkpoints; 0: after every epoch
    metrics_seconds: float = 0.5  # the least time between two writes of epoch metrics (EpochRecorder)


@dataclass(frozen=True)
class Stores:
    jobs: JobStore
    models: ModelStore
    artifacts: ArtifactStore
    checkpoints: ArtifactStore
    datasets: DatasetCatalog = field(default_factory=DatasetCatalog)


def train_model(
    spec: JobSpec, device: torch.device, datasets: DatasetCatalog = BUILT_INS, **callbacks: Callable
) -> tuple[TrainedModel, TrainingResult]:
    """Seeded end to end: the same spec on the same device gives the same weights."""
    dataset = datasets.load(spec.dataset)
    input_shape = tuple(spec.model.input_shape or dataset.info.input_shape)
    data = prepare_data(dataset, input_shape, spec.training.validation_fraction, spec.training.seed).to(device)
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, input_shape).to(device)
    result = train(network, data, spec.training, **callbacks)
    network.eval()
    return TrainedModel(spec, network.cpu(), data.input_mean.cpu(), data.input_std.cpu()), result


@contextmanager
def heartbeat(beat: Callable[[], bool], every_seconds: float) -> Iterator[threading.Event]:
    """Call `beat` every interval from a thread while the block runs (training holds the main thread).

    The event yielded is set once `beat` answers False: the job is no longer this worker's.
    """
    stop, lost = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.wait(every_seconds):
            try:
                if not beat():
                    lost.set()
                    return
            except Exception:
                log.exception("heartbeat failed; trying again")

    thread = threading.Thread(target=loop, name="job-heartbeat", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


class EpochRecorder:
    """Writes epochs' metrics from a thread of its own, so training does not wait for the database.

    A write goes at most every `every_seconds`, with all the epochs that ended since the last one: a
    write holds the GIL for milliseconds, which short epochs would otherwise pay for one by one. A
    write that finds the lease lost sets `lost`, which stops training at its next step as the
    heartbeat's would.
    """

    def __init__(self, write: Callable[[list[EpochMetrics]], None], lost: threading.Event, every_seconds: float) -> None:
        self._write = write
        self._lost = lost
        self._every_seconds = every_seconds
        self._pending: queue.SimpleQueue[EpochMetrics | threading.Event | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="job-metrics", daemon=True)

    def __enter__(self) -> "EpochRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pending.put(None)
        self._thread.join()

    def record(self, metrics: EpochMetrics) -> None:
        self._pending.put(metrics)

    def flush(self) -> None:
        """Wait until every epoch recorded so far is written; raise what a write raised."""
        done = threading.Event()
        self._pending.put(done)
        done.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        held: list[EpochMetrics] = []  # ended less than every_seconds after the last write
        next_write = -math.inf
        while True:
            try:
                item = self._pending.get(timeout=max(next_write - time.monotonic(), 0.0) if held else None)
            except queue.Empty:
                self._write_now(held)
                held, next_write = [], time.monotonic() + self._every_seconds
                continue
            if isinstance(item, EpochMetrics):
                held.append(item)
                if time.monotonic() < next_write:
                    continue
            if held:
                self._write_now(held)
                held, next_write = [], time.monotonic() + self._every_seconds
            if isinstance(item, threading.Event):
                item.set()
            elif item is None:
                return

    def _write_now(self, epochs: list[EpochMetrics]) -> None:
        if self._error is not None:
            return
        try:
            self._write(epochs)
        except BaseException as error:
            self._error = error
            if isinstance(error, LeaseLost):
                self._lost.set()
            else:
                log.exception("could not record epochs' metrics")


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
        if now - last_poll < limits.control_poll_seconds:
            return
        last_poll = now
        if now - started > limits.time_limit_seconds:
            raise JobTimedOut()
        if jobs.is_cancel_requested(lease.job_id):
            raise JobCancelled()

    return interrupt


def _stored_checkpoint(checkpoints: ArtifactStore, job_id: str) -> Checkpoint | None:
    if not checkpoints.exists(job_id):
        return None
    try:
        tensors, metadata = checkpoints.load_with_metadata(job_id)
        return Checkpoint.from_stored(tensors, metadata)
    except (ArtifactUnavailable, KeyError, ValueError):
        log.warning("checkpoint of job %s is unreadable; starting it from scratch", job_id)
        return None


def run_job(job_id: str, stores: Stores, worker: str, limits: RunLimits = RunLimits()) -> None:
    """Claim the job, train (from its checkpoint if an earlier attempt left one), store the model.

    A job that is not queued (cancelled, finished, or running elsewhere) is left alone, so a
    message delivered twice runs the job once.
    """
    jobs = stores.jobs
    device = training_device()
    lease = jobs.start(job_id, str(device), worker)
    if lease is None:
        log.info("job %s is not queued; skipping", job_id)
        return
    job = jobs.get(job_id)
    if job.recalibration is not None:
        _run_recalibration(lease, job, stores)
        return
    spec = JobSpec.model_validate(job.spec)
    if spec.training.time_limit_seconds is not None:
        limits = replace(limits, time_limit_seconds=min(limits.time_limit_seconds, spec.training.time_limit_seconds))
    checkpoint = _stored_checkpoint(stores.checkpoints, job_id)
    if checkpoint is not None:
        jobs.mark_resumed(lease, checkpoint.epoch)
        # The lost attempt may have died before it wrote the metrics of the epochs it had checkpointed.
        jobs.record_epochs(lease, list(checkpoint.history))

    last_checkpoint = time.monotonic()

    def after_epoch(metrics: EpochMetrics, capture: Callable[[], Checkpoint]) -> None:
        nonlocal last_checkpoint
        # None after the last epoch: the model is stored next. Saved before the epoch's metrics are
        # recorded, so with CHECKPOINT_SECONDS=0 the progress shown is always an epoch it can resume from.
        if metrics.epoch < spec.training.epochs and time.monotonic() - last_checkpoint >= limits.checkpoint_seconds:
            saved = capture()
            stores.checkpoints.save(job_id, saved.tensors, saved.metadata)
            last_checkpoint = time.monotonic()
        recorder.record(metrics)

    try:
        with (
            heartbeat(lambda: jobs.heartbeat(lease), limits.heartbeat_seconds) as lost,
            EpochRecorder(partial(jobs.record_epochs, lease), lost, limits.metrics_seconds) as recorder,
        ):
            trained, result = train_model(
                spec,
                device,
                stores.datasets,
                on_epoch=after_epoch,
                interrupt=_interrupt(lease, jobs, limits, lost),
                resume=checkpoint,
            )
            recorder.flush()
            _store_model(lease, job.owner, trained, result.kept.quality(), stores, best_epoch=result.best_epoch)
    except LeaseLost:
        # Another worker has the job now and goes on from the checkpoint: leave both alone.
        log.warning("job %s was queued again while this worker ran it; stopping", job_id)
        return
    except JobCancelled:
        jobs.mark_cancelled(lease)
    except JobTimedOut:
        jobs.fail(job_id, "timeout", f"the job ran past its time limit of {limits.time_limit_seconds:g} s", lease)
    except TrainingDiverged as error:
        jobs.fail(job_id, "diverged", str(error), lease)
    except DatasetUnavailable as error:
        jobs.fail(job_id, error.code, error.message, lease)
    except Exception as error:
        log.exception("job %s failed", job_id)
        jobs.fail(job_id, "internal_error", f"{type(error).__name__}: {error}", lease)
    stores.checkpoints.delete(job_id)


def _run_recalibration(lease: Lease, job: JobRecord, stores: Stores) -> None:
    """Population statistics for the parent model's BN layers, stored as a new model that names its parent."""
    assert job.recalibration is not None
    recalibration = Recalibration.model_validate(job.recalibration)
    try:
        parent = stores.models.get(recalibration.parent_model_id)
        trained = TrainedModel.from_tensors(parent.spec, stores.artifacts.load(parent.id, parent.artifact_sha256))
        model, validation = recalibrate(trained, recalibration, stores.datasets)
        _store_model(lease, job.owner, model, parent.final_metrics | validation, stores, parent_id=parent.id)
    except LeaseLost:
        log.warning("recalibration job %s was queued again while this worker ran it; stopping", job.id)
    except DatasetUnavailable as error:
        stores.jobs.fail(job.id, error.code, error.message, lease)
    except Exception as error:
        log.exception("recalibration job %s failed", job.id)
        stores.jobs.fail(job.id, "internal_error", f"{type(error).__name__}: {error}", lease)


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
