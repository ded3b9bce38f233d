"""With Redis and separate worker processes, jobs spread, models travel intact, readiness follows Redis."""

import hashlib
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import WORKER_NAMES, RunningService
from tests.support.gangs import kill_rank_1_and_see_the_job_resume
from tests.support.jobs import cancel_all, job_request, occupy_workers, submit, train, wait_for
from tests.support.processes import ROOT

pytestmark = pytest.mark.distributed


def test_eight_jobs_at_once_all_succeed_spread_over_both_workers(client: httpx.Client) -> None:
    jobs = [submit(client, job_request(training={"epochs": 4, "seed": seed})) for seed in range(8)]
    finished = [wait_for(client, job["id"]) for job in jobs]
    assert [job["status"] for job in finished] == ["succeeded"] * 8
    workers = {job["worker"].split("@")[0] for job in finished}
    assert workers == set(WORKER_NAMES)


def test_a_model_trained_by_a_worker_is_served_exactly_as_stored(client: httpx.Client, service: RunningService) -> None:
    job = wait_for(client, submit(client, job_request(training={"epochs": 2}))["id"])
    assert job["status"] == "succeeded" and job["worker"].split("@")[0] in WORKER_NAMES
    model = client.get(f"/v1/models/{job['model_id']}").json()
    path = service.data_dir / "artifacts" / f"{job['model_id']}.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model["artifact_sha256"]
    stored = load_file(path)
    for layer in client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]:
        for field, tensor in [
            ("gamma", "weight"),
            ("beta", "bias"),
            ("running_mean", "running_mean"),
            ("running_var", "running_var"),
        ]:
            assert torch.equal(torch.tensor(layer[field]), stored[f"network.{layer['name']}.{tensor}"]), field


def test_readiness_goes_unready_while_redis_is_down_and_jobs_resume_after(client: httpx.Client, service: RunningService) -> None:
    assert service.redis is not None
    assert client.get("/readyz").status_code == 200
    service.redis.stop()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": True, "broker": False, "artifacts": True}
    finally:
        service.redis.start()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service did not become ready again"
        time.sleep(0.2)
    job = wait_for(client, submit(client, job_request(training={"epochs": 1}))["id"], timeout=120)
    assert job["status"] == "succeeded"


def test_jobs_queued_and_running_all_finish_across_a_redis_restart(client: httpx.Client, service: RunningService) -> None:
    """Redis keeps its queue in the append-only file; workers reconnect and take up the rest."""
    assert service.redis is not None
    jobs = [submit(client, job_request(training={"epochs": 8, "seed": seed})) for seed in range(6)]
    wait_for(client, jobs[0]["id"], until={"running"})
    service.redis.stop()
    time.sleep(1)
    service.redis.start()
    finished = [wait_for(client, job["id"], timeout=240) for job in jobs]
    assert [job["status"] for job in finished] == ["succeeded"] * 6


def worker_healthcheck(service: RunningService, name: str) -> subprocess.CompletedProcess[str]:
    """The container health check, run as compose runs it: with the worker's environment, for its node name."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "healthcheck", "--hostname", f"{name}@%h"],
        cwd=ROOT,
        env={**os.environ, **service.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_each_worker_reports_its_own_health_while_it_trains_past_the_window(
    client: httpx.Client, service: RunningService
) -> None:
    """A worker whose single pool slot trains for longer than the health window is healthy; a stopped one is not,
    though another worker on the same host is alive."""
    window = float(service.env["JOB_STALE_SECONDS"])
    blockers = occupy_workers(client, service.worker_count)
    try:
        time.sleep(window + 1)  # time itself is the condition: every worker trains past the window
        assert {job["status"] for job in (client.get(f"/v1/jobs/{b['id']}").json() for b in blockers)} == {"running"}
        checks = {name: worker_healthcheck(service, name) for name in WORKER_NAMES}
        assert {name: check.returncode for name, check in checks.items()} == dict.fromkeys(WORKER_NAMES, 0), checks
    finally:
        cancel_all(client, blockers)

    stopped, alive = WORKER_NAMES
    service.stop_worker(stopped)
    try:
        time.sleep(window + 1)  # past the window since the stopped worker last touched its file
        unhealthy = worker_healthcheck(service, stopped)
        assert unhealthy.returncode == 1 and "last showed life" in unhealthy.stderr, unhealthy
        assert worker_healthcheck(service, alive).returncode == 0
        never = worker_healthcheck(service, "worker-never-started")
        assert never.returncode == 1 and "has started here" in never.stderr
    finally:
        service.start_worker(stopped)


def test_jobs_go_to_the_workers_of_the_device_they_ask_for(client: httpx.Client, service: RunningService) -> None:
    """No worker here takes the `gpu` queue: a GPU job waits while CPU jobs run, until a GPU worker comes."""
    gpu_job = submit(client, job_request(training={"epochs": 1}) | {"resources": {"device": "gpu"}})
    cpu_job = wait_for(client, submit(client, job_request(training={"epochs": 1}) | {"resources": {"device": "cpu"}})["id"])
    assert cpu_job["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{gpu_job['id']}").json()["status"] == "queued"
    service.env["WORKER_QUEUES"] = "gpu"
    try:
        service.start_worker("worker-gpu")
    finally:
        del service.env["WORKER_QUEUES"]
    try:
        finished = wait_for(client, gpu_job["id"], timeout=120)
    finally:
        service.stop_worker("worker-gpu")
    assert finished["status"] == "succeeded" and finished["worker"].startswith("worker-gpu@")


GANG_JOB = {"model": {"hidden_sizes": [32, 32]}, "training": {"epochs": 3, "seed": 0, "batch_size": 64}}


def _stored_network(service: RunningService, job: dict) -> dict[str, torch.Tensor]:
    stored = load_file(service.data_dir / "artifacts" / f"{job['model_id']}.safetensors")
    return {name: tensor for name, tensor in stored.items() if name.startswith("network.")}


def test_a_job_on_two_workers_runs_on_both_and_trains_the_model_two_processes_of_one_worker_train(
    client: httpx.Client, service: RunningService
) -> None:
    across = train(client, job_request(**GANG_JOB, resources={"workers": 2}))

    assert across["world_size"] == 2
    assert sorted(worker.split("@")[0] for worker in across["workers"]) == sorted(WORKER_NAMES)
    assert across["workers"][0] == across["worker"]  # member 0, which took the job
    assert across["devices"] == ["cpu", "cpu"]
    assert [m["epoch"] for m in across["metrics"]] == [1, 2, 3]

    one_worker = train(client, job_request(**GANG_JOB, resources={"processes": 2}))
    assert len(one_worker["workers"]) == 1 and one_worker["world_size"] == 2
    theirs = _stored_network(service, one_worker)
    ours = _stored_network(service, across)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():  # weights, γ, β and every BN layer's running statistics
        np.testing.assert_allclose(ours[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)


def test_a_two_worker_job_without_its_second_worker_goes_back_to_the_queue_and_finishes_once_it_is_free(
    client: httpx.Client, service: RunningService
) -> None:
    blockers = occupy_workers(client, 1)
    try:
        job = submit(client, job_request(**GANG_JOB, resources={"workers": 2}))
        timeout = float(service.env["GANG_JOIN_TIMEOUT_SECONDS"])
        deadline = time.monotonic() + 4 * timeout + 60
        while (record := client.get(f"/v1/jobs/{job['id']}").json())["attempts"] < 2:
            assert time.monotonic() < deadline, record
            assert record["status"] in {"queued", "running"}, record
            time.sleep(0.2)
        assert record["status"] in {"queued", "running"}
        assert client.get(f"/v1/jobs/{blockers[0]['id']}").json()["status"] == "running"  # never taken from it
    finally:
        cancel_all(client, blockers)
    finished = wait_for(client, job["id"], timeout=240)
    assert finished["status"] == "succeeded", finished["error"]
    assert sorted(worker.split("@")[0] for worker in finished["workers"]) == sorted(WORKER_NAMES)


def test_killing_a_process_of_a_two_worker_gang_fails_the_attempt_and_the_job_resumes_from_its_checkpoint(
    client: httpx.Client,
) -> None:
    running, finished = kill_rank_1_and_see_the_job_resume(client, {"workers": 2})  # member 1's, on the worker that joined
    assert len(running["workers"]) == 2 and len(finished["workers"]) == 2


def test_two_jobs_each_asking_for_both_workers_at_once_both_finish(client: httpx.Client) -> None:
    """Each worker may take one of them first and wait for the other: the join timeout frees one for the other."""
    jobs = [submit(client, job_request(**GANG_JOB, resources={"workers": 2})) for _ in range(2)]
    finished = [wait_for(client, job["id"], timeout=300) for job in jobs]
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
    for job in finished:
        assert sorted(worker.split("@")[0] for worker in job["workers"]) == sorted(WORKER_NAMES)
