"""Jobs survive faults: a SIGKILLed worker, a restarted API, divergence, time limits, retried submissions."""

import os
import signal
import time
from pathlib import Path

import httpx
import torch
from safetensors.torch import load_file

from bncore.jobs.recovery import recover_lost_jobs, remove_finished_checkpoints
from bncore.parent_process import POLL_SECONDS
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database
from bncore.storage.job_store import JobStore
from bncore.storage.migrations import upgrade_database
from tests.conftest import FAST_RECOVERY, RunningService
from tests.support.jobs import figures, job_request, submit, train, wait_for
from tests.support.processes import (
    embedded_worker_pids,
    free_port,
    own_service,
    start,
    stop,
    wait_ready,
    wait_until_gone,
)

# Wide enough that an epoch takes a good part of a second: metrics arrive at most every 0.5 s, and the kill
# must come while the job still has epochs to go. The schedule moves the rate every step: a resumed job must
# go on with it exactly.
RESUMABLE = job_request(
    training={"epochs": 12, "seed": 11, "schedule": {"kind": "cosine", "warmup_epochs": 2, "min_lr": 0.001}},
    model={"hidden_sizes": [1024, 1024]},
)


def wait_for_epoch(client: httpx.Client, job_id: str, epoch: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]["epoch"] >= epoch:
            return job
        assert job["status"] in {"queued", "running"}, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach epoch {epoch}")


def stored(service: RunningService, model_id: str) -> dict[str, torch.Tensor]:
    return load_file(service.data_dir / "artifacts" / f"{model_id}.safetensors")


def test_job_survives_worker_sigkill_and_resumes_from_its_checkpoint(client: httpx.Client, service: RunningService) -> None:
    job = submit(client, RESUMABLE)
    running = wait_for_epoch(client, job["id"], 4)
    assert running["status"] == "running" and running["progress"]["epoch"] < 12, running["progress"]
    os.kill(service.worker_pid(running["worker"]), signal.SIGKILL)
    killed_at = running["progress"]["epoch"]
    if service.workers:  # distributed: bring the killed worker back, as compose's restart policy would
        service.start_worker(running["worker"].split("@")[0])

    finished = wait_for(client, job["id"], timeout=180)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempts"] == 2
    assert finished["resumed_from_epoch"] is not None and finished["resumed_from_epoch"] >= killed_at
    assert [m["epoch"] for m in finished["metrics"]] == list(range(1, 13))

    clean = train(client, RESUMABLE)
    assert clean["attempts"] == 1 and clean["resumed_from_epoch"] is None
    resumed, uninterrupted = stored(service, finished["model_id"]), stored(service, clean["model_id"])
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)
    assert list(map(figures, finished["metrics"])) == list(map(figures, clean["metrics"]))


def test_api_restart_while_a_job_runs_loses_nothing(client: httpx.Client, service: RunningService) -> None:
    job = submit(client, RESUMABLE)
    done = train(client, job_request(training={"epochs": 1}))
    predict = (f"/v1/models/{done['model_id']}/predict", {"inputs": [[0.0] * 64, [16.0] * 64]})
    # Snapshots taken before the restart: the client's URL answers from the new API process afterwards.
    done_before = client.get(f"/v1/jobs/{done['id']}").json()
    answer_before = client.post(predict[0], json=predict[1]).json()
    running_before = wait_for_epoch(client, job["id"], 2)
    service.restart_api()
    with httpx.Client(base_url=service.url, timeout=60) as after:
        assert after.get(f"/v1/jobs/{done['id']}").json() == done_before
        answered = after.post(predict[0], json=predict[1])
        assert answered.status_code == 200 and answered.json() == answer_before
        finished = wait_for(after, job["id"], timeout=180)
        assert finished["status"] == "succeeded", finished["error"]
        assert [m["epoch"] for m in finished["metrics"]] == list(range(1, 13))
        recorded = len(running_before["metrics"])
        # Epochs a worker lost with the API (the embedded one) may be trained again: to the same figures.
        assert list(map(figures, finished["metrics"][:recorded])) == list(map(figures, running_before["metrics"]))


def test_a_worker_lost_too_often_fails_the_job_as_worker_lost(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_database(url)
    jobs = JobStore(Database(url))
    job, _ = jobs.create(job_request() | {"resources": {"device": "any"}}, owner="alice")
    requeued: list[tuple[str, str]] = []
    for attempt in (1, 2):
        assert jobs.start(job.id, "cpu", f"worker-{attempt}") is not None
        time.sleep(0.05)
        recovered = recover_lost_jobs(jobs, lambda *args: requeued.append(args), 0.01, max_attempts=2)
        assert recovered == ([job.id] if attempt == 1 else [])
    assert requeued == [(job.id, "any")]
    failed = jobs.get(job.id)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "worker_lost"


def test_a_job_that_ends_with_no_worker_to_clean_up_leaves_no_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_database(url)
    jobs, checkpoints = JobStore(Database(url)), ArtifactStore(tmp_path / "checkpoints")
    lost, resumable = (jobs.create(job_request(), owner="alice")[0] for _ in range(2))
    for job in (lost, resumable):
        assert jobs.start(job.id, "cpu", "worker-1") is not None
        checkpoints.save(job.id, {"weight": torch.zeros(2)}, {"epoch": "3"})
    jobs.fail(lost.id, "worker_lost", "the job's worker was lost 3 times (the limit)")

    assert remove_finished_checkpoints(jobs, checkpoints) == [lost.id]
    assert checkpoints.names() == [resumable.id]  # a job that may still resume keeps its checkpoint


def test_a_worker_that_lost_its_job_cannot_finish_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    upgrade_database(url)
    jobs = JobStore(Database(url))
    job, _ = jobs.create(job_request(), owner="alice")
    first = jobs.start(job.id, "cpu", "worker-1")
    assert first is not None
    time.sleep(0.05)
    recover_lost_jobs(jobs, lambda *args: None, 0.01, max_attempts=3)
    second = jobs.start(job.id, "cpu", "worker-2")
    assert second is not None and second.attempt == 2
    assert not jobs.heartbeat(first) and not jobs.succeed(first, "model_x")
    assert jobs.succeed(second, "model_y")
    assert jobs.get(job.id).model_id == "model_y"


def test_a_job_whose_message_a_killed_worker_took_is_sent_again(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), **FAST_RECOVERY}
    with own_service(tmp_path, {"EMBEDDED_WORKERS": "0", **env}) as url, httpx.Client(base_url=url, timeout=60) as client:
        job = submit(client, job_request(training={"epochs": 1}))
        [message] = (tmp_path / "broker" / "queue").glob("*.msg")
        message.unlink()  # the folder broker's message is gone once a worker takes it, before it claims the job
        worker = start("worker", env, tmp_path / "worker.log")
        try:
            finished = wait_for(client, job["id"], timeout=120)
        finally:
            stop(worker)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1


def test_a_diverging_job_stops_at_once_with_a_hint(client: httpx.Client) -> None:
    job = submit(
        client,
        job_request(
            model={"normalization": "none", "hidden_sizes": [100, 100]},
            training={"epochs": 200, "learning_rate": 10.0},
        ),
    )
    failed = wait_for(client, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "diverged"
    assert "lower the learning rate or use batchnorm" in failed["error"]["message"]
    assert "epoch 1" in failed["error"]["message"] and failed["progress"]["epoch"] == 0
    assert failed["model_id"] is None


def test_a_job_past_its_time_limit_fails_as_timeout_and_frees_the_worker(client: httpx.Client) -> None:
    job = submit(client, job_request(training={"epochs": 1000, "time_limit_seconds": 2}, model={"hidden_sizes": [512, 512]}))
    failed = wait_for(client, job["id"], timeout=60)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert "time limit of 2 s" in failed["error"]["message"]
    train(client, job_request(training={"epochs": 1}))


def test_the_same_idempotency_key_and_body_return_the_same_job(client: httpx.Client) -> None:
    body = job_request(training={"epochs": 1, "seed": 42})
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-run-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-run-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    other_body = client.post("/v1/jobs", json=job_request(training={"epochs": 2}), headers={"Idempotency-Key": "nightly-run-1"})
    assert other_body.status_code == 409
    assert "different request" in other_body.json()["error"]["message"]
    other_key = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-run-2"})
    assert other_key.json()["id"] != first.json()["id"]
    assert wait_for(client, first.json()["id"])["attempts"] == 1


def test_an_embedded_worker_ends_with_its_api_process_however_that_died(tmp_path: Path) -> None:
    """`make run` starts the worker inside the API's process tree: an API killed outright (SIGKILL, OOM) must not
    leave behind a worker that goes on taking jobs from the data directory it shared."""
    port = free_port()
    log = tmp_path / "service.log"
    api = start("service", {"DATA_DIR": str(tmp_path), "PORT": str(port), "HOST": "127.0.0.1", "EMBEDDED_WORKERS": "1"}, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", api, log)
        [worker] = embedded_worker_pids(api.pid)

        api.kill()
        api.wait()

        assert wait_until_gone(worker, timeout=10 * POLL_SECONDS), "the embedded worker outlived its API process"
    finally:
        stop(api)
