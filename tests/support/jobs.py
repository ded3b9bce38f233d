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


def train(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Submit, wait, and insist it succeeded; returns the finished job."""
    job = wait_for(client, submit(client, body)["id"])
    assert job["status"] == "succeeded", job
    return job
