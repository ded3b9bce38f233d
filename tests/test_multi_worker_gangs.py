"""A gang spanning several workers: its members meet at one c10d rendezvous and train the model one process would.

Here both members run in this test's process, each with its own launcher, as two workers would; the
distributed story (tests/test_distributed_workers.py) runs them in two Celery workers.
"""

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from rich.console import Console

from bncore.jobs.recovery import recover_lost_jobs
from bncore.specs import JobSpec
from bncore.storage.job_store import JobRecord, Joined
from bncore.training.data_parallel import (
    Gang,
    GangFailed,
    GangIncomplete,
    free_port,
    join_data_parallel,
    train_data_parallel,
)
from bncore.training.loop import train
from bncore.training.networks import build_network
from bnjobs.cli.render import job_details
from service.schemas import JobOut
from tests.conftest import RunningService
from tests.support.jobs import job_request, submit, wait_for
from tests.support.stores import stores_in
from tests.test_data_parallel_jobs import _data, _one_process, _spec


def _two_workers(spec: JobSpec) -> JobSpec:
    return spec.model_copy(update={"resources": spec.resources.model_copy(update={"processes": 1, "workers": 2})})


def _gang(run_id: str, member: int, endpoint: str, join_timeout_seconds: int = 60) -> Gang:
    return Gang(1, run_id, 0, members=2, member=member, endpoint=endpoint, join_timeout_seconds=join_timeout_seconds)


def _second_member(spec: JobSpec, gang: Gang) -> tuple[threading.Thread, dict[str, BaseException | None]]:
    """Member `gang.member` joining from a thread of its own, as another worker would; its outcome once joined."""
    outcome: dict[str, BaseException | None] = {}

    def join() -> None:
        try:
            join_data_parallel(spec, _data(spec), gang)
            outcome["error"] = None
        except BaseException as error:
            outcome["error"] = error

    member = threading.Thread(target=join)
    member.start()
    return member, outcome


def test_two_members_of_one_process_each_train_the_model_one_process_trains() -> None:
    spec = _two_workers(_spec("global", 1))
    endpoint = f"127.0.0.1:{free_port()}"
    member, joined = _second_member(spec, _gang("test-members", 1, endpoint))
    state, result = train_data_parallel(spec, _data(spec), _gang("test-members", 0, endpoint))
    member.join(timeout=60)

    assert joined == {"error": None}
    single_state, single_history = _one_process(_spec(None, 1))
    for name, value in single_state.items():  # weights, γ, β and the running statistics of every BN layer
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)
    assert [m.train_loss for m in result.history] == pytest.approx([m.train_loss for m in single_history], abs=1e-5)


def test_members_that_read_different_checkpoints_fail_the_attempt_rather_than_train_apart() -> None:
    spec = _two_workers(_spec("global", 1))
    checkpoints = []
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, (4,), for_training=True)
    train(network, _data(spec), spec.training.model_copy(update={"epochs": 2}), lambda m, capture: checkpoints.append(capture()))
    endpoint = f"127.0.0.1:{free_port()}"
    member, joined = _second_member(spec, _gang("test-apart", 1, endpoint))  # from scratch
    with pytest.raises(GangFailed, match="different epochs"):  # member 0 going on from epoch 2
        train_data_parallel(spec, _data(spec), _gang("test-apart", 0, endpoint), resume=checkpoints[-1])
    member.join(timeout=60)
    assert isinstance(joined["error"], GangFailed)


def test_a_member_alone_gives_up_after_the_join_timeout() -> None:
    spec = _two_workers(_spec("global", 1))
    started = time.monotonic()
    with pytest.raises(GangIncomplete, match="within 2 s"):
        train_data_parallel(spec, _data(spec), _gang("test-alone", 0, f"127.0.0.1:{free_port()}", join_timeout_seconds=2))
    assert time.monotonic() - started < 30


@pytest.mark.embedded_only
def test_a_two_worker_job_on_a_service_of_one_worker_goes_back_to_the_queue_after_the_join_timeout(
    client: httpx.Client, service: RunningService
) -> None:
    job = submit(client, job_request(resources={"workers": 2}))
    timeout = float(service.env["GANG_JOIN_TIMEOUT_SECONDS"])
    running = wait_for(client, job["id"], until={"running"})
    assert running["workers"] == [running["worker"]]  # member 0 alone: no second worker here
    deadline = time.monotonic() + 2 * timeout + 60
    while (record := client.get(f"/v1/jobs/{job['id']}").json())["attempts"] < 2:
        assert time.monotonic() < deadline, record
        assert record["status"] in {"queued", "running"}, record
        time.sleep(0.2)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert wait_for(client, job["id"])["status"] == "cancelled"


def test_bnjobs_jobs_show_lists_every_worker_and_device_of_a_job_spanning_two() -> None:
    spec = _two_workers(_spec("global", 1)).model_dump(mode="json")
    now = datetime.now(timezone.utc)
    record = JobRecord(
        "job_x", "running", spec, now, now, None, 6, "cpu", "worker-a@h", None, None, False, 1, now, None, None, None,
        workers=["worker-a@h", "worker-b@h"], devices=["cpu", "cuda:0"],
    )  # fmt: skip
    shown = Console(width=200, record=True)
    shown.print(job_details(JobOut.from_record(record)))

    text = " ".join(shown.export_text().split())
    assert "workers worker-a@h, worker-b@h devices cpu, cuda:0 world size 2" in text


def test_a_worker_joins_a_gang_once_and_only_while_its_attempt_gathers(tmp_path: Path) -> None:
    jobs = stores_in(tmp_path).jobs
    job, _ = jobs.create(_two_workers(_spec("global", 1)).model_dump(mode="json"), owner="alice")
    lease = jobs.start(job.id, "cpu", "worker-a@h")
    assert lease is not None
    assert jobs.gather(lease, "127.0.0.1:29555", "worker-a@h", "cpu")

    assert jobs.join(lease, 1, "worker-a@h", "cpu") is Joined.ALREADY_MEMBER  # its taker: pass the place on
    assert jobs.join(lease, 1, "worker-b@h", "cpu") is Joined.JOINED
    assert jobs.join(lease, 1, "worker-b@h", "cpu") is Joined.NOT_GATHERING  # the same join task delivered twice
    assert jobs.join(lease, 1, "worker-c@h", "cpu") is Joined.NOT_GATHERING  # the place is taken
    gathered = jobs.get(job.id)
    assert (gathered.workers, gathered.devices) == (["worker-a@h", "worker-b@h"], ["cpu", "cpu"])
    assert gathered.rendezvous_endpoint == "127.0.0.1:29555"

    assert jobs.requeue_incomplete(lease)
    assert jobs.join(lease, 1, "worker-c@h", "cpu") is Joined.NOT_GATHERING  # a join task of an attempt that is over
    requeued = jobs.get(job.id)
    assert (requeued.status, requeued.rendezvous_endpoint, requeued.workers) == ("queued", None, [])


def test_gangs_that_did_not_gather_do_not_count_as_lost_workers(tmp_path: Path) -> None:
    """MAX_ATTEMPTS limits workers lost; a job that waited out three gatherings and then lost one worker goes on."""
    jobs = stores_in(tmp_path).jobs
    job, _ = jobs.create(_two_workers(_spec("global", 1)).model_dump(mode="json"), owner="alice")
    for _ in range(3):
        lease = jobs.start(job.id, "cpu", "worker-a@h")
        assert lease is not None and jobs.requeue_incomplete(lease)
    lease = jobs.start(job.id, "cpu", "worker-a@h")  # this attempt's worker is then lost
    assert lease is not None

    # Any heartbeat before now is stale: recovery finds the worker lost, once, and queues the job again.
    assert recover_lost_jobs(jobs, lambda job_id, device: None, stale_after_seconds=0, max_attempts=3) == [job.id]
    requeued = jobs.get(job.id)
    assert (requeued.status, requeued.attempts, requeued.workers_lost) == ("queued", 4, 1)
