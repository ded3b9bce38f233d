"""What a user does with the API over and over: submit a job and wait for it."""

import time
from typing import Any

import httpx

FINISHED = {"succeeded", "failed", "cancelled"}


def job_request(**overrides: Any) -> dict[str, Any]:
    """The README's digits job, with sections replaced by `overrides` (model=..., training=...)."""
    body: dict[str, Any] = {
        "model": {"architecture": "mlp", "num_classes": 10},
        "dataset": {"name": "digits"},
        "training": {"epochs": 3, "seed": 0},
    }
    for section, values in overrides.items():
        body[section] = {**body.get(section, {}), **values}
    return body


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(client: httpx.Client, job_id: str, until: set[str] = FINISHED, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def wait_for_epochs(client: httpx.Client, job_id: str, epochs: int, timeout: float = 120) -> dict[str, Any]:
    """The job once it has recorded `epochs` epochs; fails if it ends or the deadline passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if len(job["metrics"]) >= epochs:
            return job
        assert job["status"] in {"queued", "running"}, job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not record {epochs} epochs in {timeout}s")


def train(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Submit, wait, and insist it succeeded; returns the finished job."""
    job = wait_for(client, submit(client, body)["id"])
    assert job["status"] == "succeeded", job
    return job


def long_job(**training: Any) -> dict[str, Any]:
    """A job that trains for minutes unless it is stopped: wide layers, a thousand epochs."""
    return job_request(training={"epochs": 1000, **training}, model={"hidden_sizes": [512, 512]})


def occupy_workers(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Long jobs running on `count` workers, so that the next job submitted waits in the queue."""
    jobs = [submit(client, long_job(seed=seed)) for seed in range(count)]
    return [wait_for(client, job["id"], until={"running"}) for job in jobs]


def cancel_all(client: httpx.Client, jobs: list[dict[str, Any]]) -> None:
    for job in jobs:
        client.post(f"/v1/jobs/{job['id']}/cancel")
    for job in jobs:
        wait_for(client, job["id"])


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """An epoch's metrics without its wall time, which differs between two runs of the same job."""
    return {name: value for name, value in metrics.items() if name != "seconds"}


def post_experiment(client: httpx.Client, name: str, base: dict[str, Any], variants: list[dict[str, Any]]) -> httpx.Response:
    """POST /v1/experiments: `base` run once per variant, each a name and overrides deep-merged into it."""
    return client.post("/v1/experiments", json={"name": name, "base": base, "variants": variants})
