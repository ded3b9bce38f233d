"""A user trains a BN network over HTTP, watches it, reads its BN layers and predicts."""

import json

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.conftest import RunningService
from tests.support.jobs import (
    cancel_all,
    figures,
    job_request,
    long_job,
    occupy_workers,
    submit,
    train,
    wait_for,
    wait_for_epochs,
)


def test_submit_a_digits_job_follow_it_and_predict(client: httpx.Client) -> None:
    body = {"model": {"architecture": "mlp", "num_classes": 10}, "dataset": {"name": "digits"}, "training": {"epochs": 20}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": 20}
    assert job["spec"]["model"]["input_shape"] == [64]
    assert job["spec"]["model"]["hidden_sizes"] == [100, 100, 100]

    job = wait_for(client, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["device"] == "cpu" and job["error"] is None
    assert [m["epoch"] for m in job["metrics"]] == list(range(1, 21))
    assert max(m["val_accuracy"] for m in job["metrics"]) >= 0.95
    assert job["metrics"][-1]["val_accuracy"] >= 0.95
    assert job["started_at"] <= job["finished_at"]

    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["job_id"] == job["id"] and model["dataset"] == "digits"
    assert model["parameter_count"] == 64 * 100 + 2 * 100 * 100 + 3 * 2 * 100 + 100 * 10 + 10
    assert model["final_metrics"] == figures(job["metrics"][-1])

    bn = client.get(f"/v1/models/{job['model_id']}/batchnorm")
    assert bn.status_code == 200
    layers = bn.json()["layers"]
    assert [layer["name"] for layer in layers] == ["bn1", "bn2", "bn3"]
    assert all(layer["num_features"] == 100 and len(layer["running_var"]) == 100 for layer in layers)
    assert all(layer["num_batches_tracked"] == 20 * 23 for layer in layers)  # 1438 samples / 64 = 23 steps

    x, y = load_digits(return_X_y=True)
    predicted = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": x[:200].tolist()})
    assert predicted.status_code == 200
    result = predicted.json()
    assert len(result["outputs"]) == len(result["probabilities"]) == len(result["predictions"]) == 200
    np.testing.assert_allclose(np.sum(result["probabilities"], axis=1), 1.0, rtol=1e-5)
    assert np.mean(np.array(result["predictions"]) == y[:200]) >= 0.95


def test_metrics_appear_while_the_job_runs_and_cancel_stops_it(client: httpx.Client) -> None:
    job = submit(client, long_job())
    wait_for(client, job["id"], until={"running"})
    running = wait_for_epochs(client, job["id"], 2)
    assert running["status"] == "running" and running["progress"]["epoch"] >= 2

    cancel = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True
    cancelled = wait_for(client, job["id"], timeout=30)
    assert cancelled["status"] == "cancelled" and cancelled["model_id"] is None
    assert cancelled["progress"]["epoch"] < 1000

    # The worker is free again: the next job runs.
    train(client, job_request(training={"epochs": 1}))


def test_a_queued_job_is_cancelled_before_it_runs(client: httpx.Client, service: RunningService) -> None:
    blockers = occupy_workers(client, service.worker_count)
    queued = submit(client, job_request())
    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    cancel_all(client, blockers)
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{queued['id']}").json()["attempts"] == 0
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 409


def test_a_cnn_trains_on_digits_as_8x8_images(client: httpx.Client) -> None:
    job = train(client, job_request(model={"architecture": "cnn", "input_shape": [1, 8, 8], "channels": [8, 16]}))
    layers = client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]
    assert [(layer["name"], layer["num_features"]) for layer in layers] == [("bn1", 8), ("bn2", 16)]
    image = load_digits().images[:3].reshape(3, 1, 8, 8).tolist()
    assert client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": image}).status_code == 200


@pytest.mark.parametrize("dataset, classes", [("iris", 3), ("wine", 3), ("breast_cancer", 2), ("two_moons", 2)])
def test_every_built_in_dataset_trains(client: httpx.Client, dataset: str, classes: int) -> None:
    job = train(
        client,
        {
            "model": {"architecture": "mlp", "num_classes": classes, "hidden_sizes": [16]},
            "dataset": {"name": dataset},
            "training": {"epochs": 5, "batch_size": 16},
        },
    )
    assert job["metrics"][-1]["val_accuracy"] > 0.7


def test_datasets_are_listed_with_their_shapes(client: httpx.Client) -> None:
    response = client.get("/v1/datasets")
    assert response.status_code == 200
    datasets = {d["name"]: d for d in response.json()["items"]}
    assert {"digits", "iris", "wine", "breast_cancer", "two_moons"} <= set(datasets)
    assert datasets["digits"] | {"description": ""} == {
        "name": "digits",
        "description": "",
        "input_shape": [64],
        "num_classes": 10,
        "num_samples": 1797,
        "source": "builtin",
        "id": None,
        "sha256": None,
        "format": None,
        "created_at": None,
    }


def test_jobs_and_models_are_listed_newest_first_page_by_page(client: httpx.Client, digits_model: dict) -> None:
    ids = [submit(client, job_request(training={"epochs": 1}))["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["items"]] == ids[::-1][:2]
    second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert second["items"][0]["id"] == ids[0]
    for job_id in ids:
        wait_for(client, job_id)
    listed, cursor = [], None
    while True:  # every model once, however many the run has made by now
        page = client.get("/v1/models", params={"limit": 100} | ({"cursor": cursor} if cursor else {})).json()
        listed += [model["id"] for model in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert digits_model["id"] in listed and len(listed) == len(set(listed))


def test_deleting_a_model_removes_it_and_its_weights(client: httpx.Client, service) -> None:
    job = train(client, job_request(training={"epochs": 1}))
    model_id = job["model_id"]
    artifact = service.data_dir / "artifacts" / f"{model_id}.safetensors"
    assert artifact.exists()
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0] * 64]}).status_code == 404
    assert not artifact.exists()
    assert client.delete(f"/v1/models/{model_id}").status_code == 404


def test_probes_report_alive_and_ready(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": True, "broker": True, "artifacts": True}}


def read_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """Every Server-Sent Event of a job's stream, as (kind, data), until the server ends it."""
    events: list[tuple[str, dict]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def until_final_status(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """What a client that stops reading at the first `succeeded` status sees, as most clients do."""
    final = next(i for i, (kind, data) in enumerate(events) if kind == "status" and data["status"] == "succeeded")
    return events[: final + 1]


def test_the_event_stream_shows_training_as_it_happens(client: httpx.Client) -> None:
    job = submit(client, job_request(training={"epochs": 3}))
    events = read_events(client, job["id"])
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["status", "end"] and events[-1][1]["status"] == "succeeded"
    assert [data["epoch"] for kind, data in until_final_status(events) if kind == "epoch"] == [1, 2, 3]
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses[-1] == "succeeded" and set(statuses) <= {"queued", "running", "succeeded"}
    assert client.get("/v1/jobs/job_missing/events").status_code == 404


def test_a_stream_opened_after_the_job_ended_sends_every_epoch_then_the_status(client: httpx.Client) -> None:
    job = train(client, job_request(training={"epochs": 3}))
    events = read_events(client, job["id"])
    assert [kind for kind, _ in events] == ["epoch", "epoch", "epoch", "status", "end"]
    assert [data["epoch"] for kind, data in until_final_status(events) if kind == "epoch"] == [1, 2, 3]
