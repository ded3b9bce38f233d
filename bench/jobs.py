"""Training through the API, as a user does: submit a job, wait for it, read its model."""

import time
from datetime import datetime
from typing import Any

import httpx

MLP_64_100_100_100_10 = {"architecture": "mlp", "num_classes": 10, "hidden_sizes": [100, 100, 100]}  # on digits
SMALL_MODEL = {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]}  # on iris


def job_body(model: dict[str, Any], dataset: str, **training: Any) -> dict[str, Any]:
    return {"model": model, "dataset": {"name": dataset}, "training": {"seed": 0, **training}}


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 300, poll_seconds: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
            return job
        time.sleep(poll_seconds)
    raise RuntimeError(f"job {job_id} did not finish in {timeout}s")


def train(client: httpx.Client, body: dict[str, Any], poll_seconds: float = 0.05) -> dict[str, Any]:
    """Submit and wait, asking for the job every `poll_seconds`; the finished job."""
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"submitting a job: HTTP {response.status_code} {response.text}")
    return wait_finished(client, response.json()["id"], poll_seconds=poll_seconds)


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
