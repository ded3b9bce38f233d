"""An operator scrapes /metrics: the jobs, predictions, batches and cache lookups a user caused show up in it."""

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.jobs import cancel_all, job_request, long_job, submit, train
from tests.support.metrics import scrape, value
from tests.support.processes import own_service

PREDICT_ROUTE = "/v1/models/{model_id}/predict"


def digits_rows(count: int) -> list[list[float]]:
    return [[float(i % 16)] * 64 for i in range(count)]


def wait_until_no_job_runs(client: httpx.Client, timeout: float = 120) -> None:
    """Jobs other tests left behind would finish between the two scrapes and blur the difference."""
    deadline = time.monotonic() + timeout
    while any(job["status"] in {"queued", "running"} for job in client.get("/v1/jobs", params={"limit": 100}).json()["items"]):
        assert time.monotonic() < deadline, "jobs of other tests still run"
        time.sleep(0.2)


def test_metrics_move_with_the_jobs_and_predictions_a_user_makes(client: httpx.Client) -> None:
    wait_until_no_job_runs(client)
    before = scrape(client)
    job = train(client, job_request(training={"epochs": 1, "seed": 7}))
    for rows in (1, 2, 3):
        response = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": digits_rows(rows)})
        assert response.status_code == 200, response.text
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("bnjobs_jobs", state="succeeded") == 1
    assert moved("bnjobs_job_duration_seconds_count", state="succeeded") == 1
    assert moved("bnjobs_job_duration_seconds_sum", state="succeeded") > 0
    assert value(after, "bnjobs_database_up") == 1
    # Three predict requests, one at a time: three forward passes of 1, 2 and 3 rows.
    assert moved("bnjobs_predict_latency_seconds_count", status="200") == 3
    assert moved("bnjobs_predict_latency_seconds_sum", status="200") > 0
    assert moved("bnjobs_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200") == 3
    assert moved("bnjobs_batch_rows_count") == 3
    assert moved("bnjobs_batch_rows_sum") == 6
    assert moved("bnjobs_batch_rows_bucket", le="2.0") == 2
    assert moved("bnjobs_batch_requests_sum") == 3
    # The new model is loaded once, then served from the cache.
    assert moved("bnjobs_model_cache_misses_total") == 1
    assert moved("bnjobs_model_cache_hits_total") == 2
    assert value(after, "bnjobs_model_cache_models") >= 1


def test_routes_are_counted_by_template_and_status_not_by_path(client: httpx.Client) -> None:
    before = scrape(client)
    for job_id in ("job_nope1", "job_nope2"):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/static/dashboard.css").status_code == 200
    after = scrape(client)
    labels = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}
    assert value(after, "bnjobs_http_requests_total", **labels) - value(before, "bnjobs_http_requests_total", **labels) == 2
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "bnjobs_http_requests_total", **unmatched) - value(before, "bnjobs_http_requests_total", **unmatched) == 1
    static = {"method": "GET", "route": "/static/*", "status": "200"}
    assert value(after, "bnjobs_http_requests_total", **static) - value(before, "bnjobs_http_requests_total", **static) == 1
    assert not any(dict(labels).get("route", "").startswith(("/no/", "/v1/jobs/job_")) for _, labels in after)


def test_a_running_job_reports_its_training_speed(client: httpx.Client) -> None:
    job = submit(client, long_job(seed=11))
    try:
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] < 1:
            assert time.monotonic() < deadline, "the long job trained no epoch in 120 s"
            time.sleep(0.2)
        assert value(scrape(client), "bnjobs_training_epochs_per_second", job_id=job["id"]) > 0
    finally:
        cancel_all(client, [job])
    assert value(scrape(client), "bnjobs_training_epochs_per_second", job_id=job["id"]) == 0  # no longer running


ADMIN = {"key": "ops-admin-key-0123456789", "owner": "ops", "scopes": ["admin"]}
TRAINER = {"key": "alice-train-key-0123456789", "owner": "alice", "scopes": ["train", "infer"]}


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_service(tmp_path_factory.mktemp("metrics-keys"), {"EMBEDDED_WORKERS": "0"}, [ADMIN, TRAINER]) as url:
        yield url


def test_with_api_keys_only_an_admin_key_reads_the_metrics(keyed_service: str) -> None:
    anonymous = httpx.get(f"{keyed_service}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    trainer = httpx.get(f"{keyed_service}/metrics", headers={"Authorization": f"Bearer {TRAINER['key']}"})
    assert trainer.status_code == 403
    assert "admin" in trainer.json()["error"]["message"]
    admin = httpx.get(f"{keyed_service}/metrics", headers={"Authorization": f"Bearer {ADMIN['key']}"})
    assert admin.status_code == 200
    names = {family.name for family in text_string_to_metric_families(admin.text)}
    assert {"bnjobs_jobs", "bnjobs_http_requests", "bnjobs_predict_latency_seconds"} <= names
