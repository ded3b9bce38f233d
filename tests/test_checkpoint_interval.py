"""A job checkpoints at most every CHECKPOINT_SECONDS and never after its last epoch, and writes its metrics
at most every `metrics_seconds`, yet reports every epoch, even across a lost worker."""

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from bncore.jobs.execution import RunLimits, run_job, train_model
from bncore.settings import Settings, from_settings
from bncore.specs import JobSpec
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database
from bncore.storage.job_store import JobStore, Lease
from bncore.training.checkpoints import Checkpoint
from bncore.training.epoch_metrics import EpochMetrics
from tests.support.jobs import job_request
from tests.support.stores import stores_in

EPOCHS = 5
LIMITS = from_settings(RunLimits, Settings())  # a worker's, as the settings' defaults make them


class CountingStore(ArtifactStore):
    """A real checkpoint store that also remembers which epochs it was asked to save."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.saved_epochs: list[int] = []

    def save(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
        self.saved_epochs.append(json.loads(metadata["checkpoint"])["epoch"])
        return super().save(name, tensors, metadata)


class CountingJobStore(JobStore):
    """A real job store that also remembers the epochs of each write of metrics."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.writes: list[list[int]] = []

    def record_epochs(self, lease: Lease, epochs: list[EpochMetrics]) -> None:
        self.writes.append([metrics.epoch for metrics in epochs])
        super().record_epochs(lease, epochs)


@pytest.mark.parametrize(("seconds", "expected"), [(0.0, list(range(1, EPOCHS))), (3600.0, [])], ids=["0s", "1h"])
def test_checkpoints_follow_the_interval_and_metrics_every_epoch(tmp_path: Path, seconds: float, expected: list[int]) -> None:
    checkpoints = CountingStore(tmp_path / "checkpoints")
    stores = replace(stores_in(tmp_path), checkpoints=checkpoints)
    job, _ = stores.jobs.create(job_request(training={"epochs": EPOCHS}) | {"resources": {"device": "cpu"}}, "alice")

    run_job(job.id, stores, "worker-1", replace(LIMITS, checkpoint_seconds=seconds))

    finished = stores.jobs.get(job.id)
    assert finished.status == "succeeded"
    assert [metrics.epoch for metrics in finished.metrics] == list(range(1, EPOCHS + 1))
    assert checkpoints.saved_epochs == expected
    assert not checkpoints.exists(job.id)  # a finished job leaves no checkpoint behind


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, [[epoch] for epoch in range(1, EPOCHS + 1)]),
        (3600.0, [[1], list(range(2, EPOCHS + 1))]),  # the first epoch at once, the rest when the job ends
    ],
    ids=["0s", "1h"],
)
def test_short_epochs_share_a_write_of_metrics_and_none_is_lost(
    tmp_path: Path, seconds: float, expected: list[list[int]]
) -> None:
    stores = stores_in(tmp_path)
    jobs = CountingJobStore(stores.database)
    stores = replace(stores, jobs=jobs)
    job, _ = jobs.create(job_request(training={"epochs": EPOCHS}) | {"resources": {"device": "cpu"}}, "alice")

    run_job(job.id, stores, "worker-1", replace(LIMITS, metrics_seconds=seconds))

    finished = jobs.get(job.id)
    assert finished.status == "succeeded"
    assert [metrics.epoch for metrics in finished.metrics] == list(range(1, EPOCHS + 1))
    assert jobs.writes == expected


def test_a_resumed_job_reports_the_epochs_its_lost_worker_checkpointed_but_never_wrote(tmp_path: Path) -> None:
    stores = stores_in(tmp_path)
    job, _ = stores.jobs.create(job_request(training={"epochs": EPOCHS}) | {"resources": {"device": "cpu"}}, "alice")
    # The first worker trained two epochs and checkpointed the second, but had written only the first's
    # metrics when it was killed.
    lost = stores.jobs.start(job.id, "cpu", "worker-1")
    assert lost is not None
    spec = JobSpec.model_validate(job.spec)
    captured: list[Checkpoint] = []
    train_model(
        spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 2})}),
        torch.device("cpu"),
        on_epoch=lambda metrics, capture: captured.append(capture()),
    )
    stores.checkpoints.save(job.id, captured[-1].tensors, captured[-1].metadata)
    stores.jobs.record_epochs(lost, list(captured[0].history))
    assert stores.jobs.requeue_if_stale(job.id, datetime.now(timezone.utc) + timedelta(minutes=1))

    run_job(job.id, stores, "worker-2", replace(LIMITS, metrics_seconds=3600))

    finished = stores.jobs.get(job.id)
    assert (finished.status, finished.attempts, finished.resumed_from_epoch) == ("succeeded", 2, 2)
    assert [metrics.epoch for metrics in finished.metrics] == list(range(1, EPOCHS + 1))
