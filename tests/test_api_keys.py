"""With API keys configured, callers are who their key says, do what its scopes allow, and see only their own."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_keys import as_caller as as_
from tests.support.api_keys import keyed_service
from tests.support.jobs import job_request, wait_for
from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.own_backends  # each keyed service runs on the mode's backends

SUBMISSIONS_PER_MINUTE = 4


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service with API keys, on this run's backends (Redis and PostgreSQL in the distributed run)."""
    with keyed_service(tmp_path_factory.mktemp("secured"), {"JOB_SUBMISSIONS_PER_MINUTE": str(SUBMISSIONS_PER_MINUTE)}) as url:
        yield url


@pytest.fixture(scope="module")
def alices_model(secured: str) -> dict:
    with as_(secured, "alice") as alice:
        job = wait_for(alice, alice.post("/v1/jobs", json=job_request(training={"epochs": 1})).json()["id"])
        assert job["status"] == "succeeded"
        return job


def test_without_a_key_only_the_probes_answer(secured: str, alices_model: dict) -> None:
    with as_(secured, None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", f"/v1/jobs/{alices_model['id']}"),
            ("GET", "/v1/models"),
            ("GET", "/v1/datasets"),
            ("POST", f"/v1/models/{alices_model['model_id']}/predict"),
            ("DELETE", f"/v1/models/{alices_model['model_id']}"),
        ]:
            response = anonymous.request(method, path, json={})
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["error"]["message"]
    wrong = httpx.get(f"{secured}/v1/jobs", headers={"Authorization": "Bearer not-a-key-at-all"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "unknown API key"


def test_a_key_sees_and_uses_only_its_owners_jobs_and_models(secured: str, alices_model: dict) -> None:
    job_id, model_id = alices_model["id"], alices_model["model_id"]
    with as_(secured, "bob") as bob:
        assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
        assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        assert bob.get(f"/v1/models/{model_id}").status_code == 404
        assert bob.get(f"/v1/models/{model_id}/batchnorm").status_code == 404
        assert bob.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0.0] * 64]}).status_code == 404
        assert bob.delete(f"/v1/models/{model_id}").status_code == 404
        assert job_id not in {job["id"] for job in bob.get("/v1/jobs").json()["items"]}
        assert model_id not in {model["id"] for model in bob.get("/v1/models").json()["items"]}
    with as_(secured, "alice") as alice:
        assert job_id in {job["id"] for job in alice.get("/v1/jobs").json()["items"]}
        assert alice.get(f"/v1/models/{model_id}").status_code == 200
    with as_(secured, "admin") as admin:
        assert admin.get(f"/v1/jobs/{job_id}").status_code == 200
        assert model_id in {model["id"] for model in admin.get("/v1/models").json()["items"]}


def test_a_key_lists_and_reads_only_its_owners_experiments(secured: str) -> None:
    with as_(secured, "bob") as bob:
        created = bob.post(
            "/v1/experiments",
            json={
                "name": "bob's",
                "base": job_request(training={"epochs": 1}),
                "variants": [{"name": "batchnorm"}],
            },
        )
        assert created.status_code == 202, created.text
        experiment_id = created.json()["id"]
        assert experiment_id in {e["id"] for e in bob.get("/v1/experiments").json()["items"]}
    with as_(secured, "alice") as alice:
        assert experiment_id not in {e["id"] for e in alice.get("/v1/experiments").json()["items"]}
        assert alice.get(f"/v1/experiments/{experiment_id}").status_code == 404
    with as_(secured, "admin") as admin:
        assert experiment_id in {e["id"] for e in admin.get("/v1/experiments").json()["items"]}


def test_a_model_served_from_the_cache_still_answers_only_its_owner(secured: str, alices_model: dict) -> None:
    url = f"/v1/models/{alices_model['model_id']}/predict"
    with as_(secured, "alice") as alice:
        assert alice.post(url, json={"inputs": [[0.0] * 64]}).status_code == 200  # loaded into the cache
    with as_(secured, "bob") as bob:
        for _ in range(2):
            assert bob.post(url, json={"inputs": [[0.0] * 64]}).status_code == 404
    with as_(secured, "admin") as admin:
        assert admin.post(url, json={"inputs": [[0.0] * 64]}).status_code == 200


def test_scopes_limit_what_a_key_may_do(secured: str, alices_model: dict) -> None:
    model_id = alices_model["model_id"]
    with as_(secured, "alice_app") as app:
        assert app.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0.0] * 64]}).status_code == 200
        refused = app.post("/v1/jobs", json=job_request())
        assert refused.status_code == 403 and "train" in refused.json()["error"]["message"]
        assert app.delete(f"/v1/models/{model_id}").status_code == 403
    with as_(secured, "dave") as dave:
        refused = dave.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0.0] * 64]})
        assert refused.status_code == 403 and "infer" in refused.json()["error"]["message"]


def test_job_submissions_are_rate_limited_per_owner(secured: str) -> None:
    with as_(secured, "dave") as dave, as_(secured, "bob") as bob:
        body = job_request(training={"epochs": 1})
        codes = [dave.post("/v1/jobs", json=body).status_code for _ in range(SUBMISSIONS_PER_MINUTE + 1)]
        assert codes == [202] * SUBMISSIONS_PER_MINUTE + [429]
        limited = dave.post("/v1/jobs", json=body)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert bob.post("/v1/jobs", json=body).status_code == 202


def test_an_idempotent_retry_costs_no_submission(secured: str) -> None:
    with as_(secured, "erin") as erin:
        body = job_request(training={"epochs": 1})
        first = erin.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-1"})
        assert first.status_code == 202
        retries = [erin.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-1"}) for _ in range(3)]
        assert [(r.status_code, r.json()["id"]) for r in retries] == [(202, first.json()["id"])] * 3

        codes = [erin.post("/v1/jobs", json=body).status_code for _ in range(SUBMISSIONS_PER_MINUTE)]
        assert codes == [202] * (SUBMISSIONS_PER_MINUTE - 1) + [429]


def an_experiment(variants: int) -> dict:
    return {
        "name": f"{variants} learning rates",
        "base": job_request(training={"epochs": 1}),
        "variants": [
            {"name": f"lr {rate}", "overrides": {"training": {"learning_rate": rate}}} for rate in range(1, variants + 1)
        ],
    }


def test_an_experiment_is_created_whole_or_not_at_all(secured: str) -> None:
    with as_(secured, "frank") as frank:
        never = frank.post("/v1/experiments", json=an_experiment(SUBMISSIONS_PER_MINUTE + 1))
        assert never.status_code == 429 and "more than the 4 job submissions allowed" in never.json()["error"]["message"]
        for _ in range(SUBMISSIONS_PER_MINUTE - 2):
            assert frank.post("/v1/jobs", json=job_request(training={"epochs": 1})).status_code == 202
        jobs_before = frank.get("/v1/jobs").json()["items"]

        refused = frank.post("/v1/experiments", json=an_experiment(3))  # two submissions left, three jobs asked for
        assert refused.status_code == 429, refused.text
        assert frank.get("/v1/jobs").json()["items"] == jobs_before
        assert frank.get("/v1/experiments").json()["items"] == []

        made = frank.post("/v1/experiments", json=an_experiment(2), headers={"Idempotency-Key": "sweep-1"})
        assert made.status_code == 202, made.text
        again = frank.post("/v1/experiments", json=an_experiment(2), headers={"Idempotency-Key": "sweep-1"})
        assert again.status_code == 202, again.text  # no submission left, yet the retry is answered
        assert again.json()["id"] == made.json()["id"]
        assert [v["job_id"] for v in again.json()["variants"]] == [v["job_id"] for v in made.json()["variants"]]
        assert len(frank.get("/v1/jobs").json()["items"]) == len(jobs_before) + 2
        assert [e["id"] for e in frank.get("/v1/experiments").json()["items"]] == [made.json()["id"]]

        other = frank.post("/v1/experiments", json=an_experiment(1), headers={"Idempotency-Key": "sweep-1"})
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["error"]["message"]


def run_service(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DATA_DIR": str(tmp_path), "EMBEDDED_WORKERS": "0", "PORT": str(free_port()), **env},
    )


def test_without_keys_the_service_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    finished = run_service({"HOST": "0.0.0.0"}, tmp_path)
    assert finished.returncode != 0
    assert "no API keys configured and HOST=0.0.0.0 is not loopback" in finished.stderr


def test_a_malformed_keys_file_stops_the_service_at_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([{"key": "short", "owner": "x", "scopes": ["fly"]}]))
    finished = run_service({"API_KEYS_FILE": str(keys)}, tmp_path)
    assert finished.returncode != 0
    assert f"API_KEYS_FILE {keys}" in finished.stderr and "scopes" in finished.stderr
