"""A recalibration job runs under the guard a training job has: a heartbeat, its lease, the time limit, cancel.

The recalibration is held at a gate where it reads its data, as a large dataset would hold it, for as
long as the test says: no sleeping and hoping that it is still running.
"""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bncore.data.builtin import Dataset
from bncore.data.catalog import DatasetCatalog
from bncore.jobs.execution import RunLimits, run_job
from bncore.jobs.recovery import recover_lost_jobs
from bncore.settings import Settings, from_settings
from bncore.specs import DatasetRef
from bncore.storage.job_store import JobRecord
from bncore.storage.model_store import ModelRecord
from bncore.storage.wiring import Stores
from tests.support.jobs import job_request
from tests.support.stores import stores_in

STALE_SECONDS = 0.5  # the recovery loop's JOB_STALE_SECONDS, ten heartbeats
LIMITS = replace(
    from_settings(RunLimits, Settings()), heartbeat_seconds=STALE_SECONDS / 10, cancel_poll_seconds=0.0, metrics_seconds=0.0
)


class GatedCatalog(DatasetCatalog):
    """The built-in datasets, whose loading waits at a gate once the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: threading.Event | None = None
        self.reached = threading.Event()

    def load(self, ref: DatasetRef) -> Dataset:
        if self.gate is not None:
            self.reached.set()
            assert self.gate.wait(timeout=120), "the test never opened the gate"
        return super().load(ref)


@dataclass
class Recalibrating:
    stores: Stores
    parent: ModelRecord
    job: JobRecord
    gate: threading.Event
    thread: threading.Thread


@pytest.fixture
def recalibrating(tmp_path: Path) -> Iterator[Recalibrating]:
    """A trained parent model, and a worker thread running its recalibration, held at the gate."""
    catalog = GatedCatalog()
    stores = replace(stores_in(tmp_path), datasets=catalog)
    trained, _ = stores.jobs.create(
        job_request(model={"input_shape": [64]}, training={"epochs": 1}) | {"resources": {"device": "cpu"}}, "alice"
    )
    run_job(trained.id, stores, "worker-1", LIMITS)
    parent = stores.models.get(stores.jobs.get(trained.id).model_id)
    job, _ = stores.jobs.create(parent.spec.model_dump(mode="json"), "alice", recalibration={"parent_model_id": parent.id})
    catalog.gate = threading.Event()
    thread = threading.Thread(target=run_job, args=(job.id, stores, "worker-1", LIMITS))
    thread.start()
    assert catalog.reached.wait(timeout=60), "the recalibration never started"
    yield Recalibrating(stores, parent, job, catalog.gate, thread)
    catalog.gate.set()
    thread.join(timeout=120)


def test_a_recalibration_longer_than_the_stale_window_finishes_once_and_is_not_requeued(
    recalibrating: Recalibrating,
) -> None:
    jobs, requeued = recalibrating.stores.jobs, []
    # The API's recovery loop, for four stale windows while the recalibration is held.
    deadline = threading.Event()
    threading.Timer(4 * STALE_SECONDS, deadline.set).start()
    while not deadline.wait(STALE_SECONDS / 10):
        requeued += recover_lost_jobs(jobs, lambda *args: None, STALE_SECONDS, max_attempts=3)
    assert requeued == []
    assert jobs.get(recalibrating.job.id).status == "running"

    recalibrating.gate.set()
    recalibrating.thread.join(timeout=120)

    finished = jobs.get(recalibrating.job.id)
    assert (finished.status, finished.attempts) == ("succeeded", 1), finished.error
    models, _ = recalibrating.stores.models.page(100, None)
    assert [model.parent_id for model in models if model.id != recalibrating.parent.id] == [recalibrating.parent.id]


def test_a_cancelled_recalibration_stops_and_stores_no_model(recalibrating: Recalibrating) -> None:
    jobs = recalibrating.stores.jobs
    jobs.cancel(recalibrating.job.id)

    recalibrating.gate.set()
    recalibrating.thread.join(timeout=120)

    assert jobs.get(recalibrating.job.id).status == "cancelled"
    models, _ = recalibrating.stores.models.page(100, None)
    assert [model.id for model in models] == [recalibrating.parent.id]
