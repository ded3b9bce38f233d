"""A new user's first hour with the API: the README's shortest job for a CNN, predictions in either row
shape, listings that filter (and refuse what they cannot), readable names, docs that load offline."""

import json
import logging
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
import pytest
from kombu import Connection
from sklearn.datasets import load_digits

from bnjobs import Client
from tests.conftest import RunningService
from tests.support.jobs import job_request, submit, train, wait_for
from tests.support.metrics import scrape, value
from tests.support.processes import ROOT
from worker.broker import Transport

CNN_JOB = {"model": {"architecture": "cnn", "num_classes": 10, "channels": [4]}, "dataset": {"name": "digits"}}


@pytest.fixture(scope="module")
def cnn_model(service: RunningService) -> dict:
    """The README's three required fields and nothing else for the shape: a CNN on digits."""
    with httpx.Client(base_url=service.url, timeout=60) as c:
        job = train(c, CNN_JOB | {"training": {"epochs": 1}})
        return c.get(f"/v1/models/{job['model_id']}").json()


def test_a_cnn_on_digits_takes_the_datasets_image_shape_and_a_readable_name(cnn_model: dict, client: httpx.Client) -> None:
    job = client.get(f"/v1/jobs/{cnn_model['job_id']}").json()
    assert job["spec"]["model"]["input_shape"] == [1, 8, 8]
    assert job["name"] == "cnn-4-bn-digits"
    assert cnn_model["input_shape"] == [1, 8, 8] and cnn_model["name"] == "cnn-4-bn-digits"
    assert "name" not in job["spec"]  # the name is the job's, not part of what is trained


def test_a_name_given_at_submission_names_the_job_and_its_model(client: httpx.Client) -> None:
    job = train(client, job_request(training={"epochs": 1}) | {"name": "first digits try"})
    assert job["name"] == "first digits try"
    assert client.get(f"/v1/models/{job['model_id']}").json()["name"] == "first digits try"
    default = submit(client, job_request(model={"hidden_sizes": [64, 32], "normalization": "none"}, training={"epochs": 1}))
    assert default["name"] == "mlp-64-32-nobn-digits"
    assert submit(client, job_request(training={"epochs": 1}))["name"] == "mlp-3x100-bn-digits"
    resnet = submit(client, job_request(model={"architecture": "resnet", "depth": 8}, training={"epochs": 1}))
    assert resnet["name"] == "resnet-8x16-bn-digits" and resnet["spec"]["model"]["input_shape"] == [1, 8, 8]
    too_long = client.post("/v1/jobs", json=job_request() | {"name": "x" * 101})
    assert too_long.status_code == 422
    assert too_long.json()["error"]["fields"][0]["field"] == "name"


def test_the_api_page_shows_the_full_request_the_service_stores_for_the_minimal_one(client: httpx.Client) -> None:
    """docs/api.md's 'full request, with the defaults': exactly the spec and name a minimal job gets."""
    page = (ROOT / "docs" / "api.md").read_text()
    after = page.index("the full request, with the defaults")
    shown = json.loads(page[page.index("```json\n", after) + 8 : page.index("```\n", page.index("```json\n", after) + 8)])
    minimal = {"model": {"architecture": "mlp", "num_classes": 10}, "dataset": {"name": "digits"}, "training": {"epochs": 10}}
    job = submit(client, minimal)
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert {"name": job["name"], **job["spec"]} == shown


def predict(client: httpx.Client, model_id: str, rows: np.ndarray) -> httpx.Response:
    return client.post(f"/v1/models/{model_id}/predict", json={"inputs": rows.tolist()})


def test_an_image_model_predicts_flat_or_shaped_rows_alike_from_curl_sdk_and_cli(
    service: RunningService, cnn_model: dict, client: httpx.Client, tmp_path: Path
) -> None:
    flat = load_digits().data[:10]
    shaped = flat.reshape(10, 1, 8, 8)
    assert predict(client, cnn_model["id"], flat[:1]).status_code == 200  # the model is in this process's cache
    before = value(scrape(client), "bnjobs_predict_fast_path_total")
    as_shaped = predict(client, cnn_model["id"], shaped)
    as_flat = predict(client, cnn_model["id"], flat)
    assert as_shaped.status_code == 200 and as_flat.status_code == 200
    assert as_flat.content == as_shaped.content  # byte for byte
    assert value(scrape(client), "bnjobs_predict_fast_path_total") - before == 2  # both on the fast path
    many = predict(client, cnn_model["id"], load_digits().data[:70])  # over the fast path's rows: the route
    assert many.status_code == 200
    assert many.json()["probabilities"][:10] == as_flat.json()["probabilities"]

    wrong = predict(client, cnn_model["id"], flat[:, :60])
    assert wrong.status_code == 422
    assert wrong.json()["error"]["fields"] == [
        {"field": "inputs", "message": "expected shape [N, 1, 8, 8] or flat [N, 64], got [10, 60]"}
    ]

    with Client(service.url) as sdk:
        model = sdk.models.get(cnn_model["id"])
        assert model.predict(flat).tolist() == model.predict(shaped).tolist() == as_flat.json()["predictions"]

    np.save(tmp_path / "shaped.npy", shaped)
    np.savetxt(tmp_path / "flat.csv", flat, delimiter=",")
    for rows in (tmp_path / "shaped.npy", tmp_path / "flat.csv"):
        printed = subprocess.run(
            [sys.executable, "-m", "bnjobs", "--url", service.url, "predict", cnn_model["id"], str(rows)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert printed.returncode == 0, printed.stderr
        assert [int(line) for line in printed.stdout.split()] == as_flat.json()["predictions"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs?status=failed&colour=red"),
        ("GET", "/v1/models?colour=red"),
        ("GET", "/v1/datasets?colour=red"),
        ("GET", "/v1/experiments?colour=red"),
        ("GET", "/healthz?colour=red"),
    ],
)
def test_an_unknown_query_parameter_is_refused_by_name(client: httpx.Client, method: str, path: str) -> None:
    refused = client.request(method, path)
    assert refused.status_code == 422
    fields = refused.json()["error"]["fields"]
    assert [field["field"] for field in fields] == ["colour"]
    assert fields[0]["message"].startswith("unknown query parameter; this endpoint takes")


def test_an_unknown_query_parameter_on_predict_is_refused_too(client: httpx.Client, cnn_model: dict) -> None:
    path = f"/v1/models/{cnn_model['id']}/predict?verbose=1"
    refused = client.post(path, json={"inputs": load_digits().data[:1].tolist()})
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"][0] == {
        "field": "verbose",
        "message": "unknown query parameter; this endpoint takes none",
    }


def test_jobs_filter_by_status_dataset_and_experiment_and_models_by_dataset_and_job(client: httpx.Client) -> None:
    on_wine = train(client, job_request(model={"num_classes": 3}, dataset={"name": "wine"}, training={"epochs": 1}))
    cancelled = submit(client, job_request(training={"epochs": 1000}))
    client.post(f"/v1/jobs/{cancelled['id']}/cancel")
    assert wait_for(client, cancelled["id"])["status"] == "cancelled"
    experiment = client.post(
        "/v1/experiments",
        json={
            "name": "two seeds",
            "base": job_request(model={"num_classes": 3}, dataset={"name": "wine"}, training={"epochs": 1}),
            "variants": [{"name": "a"}, {"name": "b", "overrides": {"training": {"seed": 1}}}],
        },
    ).json()

    def listed(path: str) -> list[dict]:
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    failed_or_cancelled = listed("/v1/jobs?status=cancelled&limit=100")
    assert cancelled["id"] in [job["id"] for job in failed_or_cancelled]
    assert {job["status"] for job in failed_or_cancelled} == {"cancelled"}
    wine = listed("/v1/jobs?dataset=wine&limit=100")
    assert on_wine["id"] in [job["id"] for job in wine] and {job["spec"]["dataset"]["name"] for job in wine} == {"wine"}
    variants = listed(f"/v1/jobs?experiment={experiment['id']}")
    assert sorted(job["id"] for job in variants) == sorted(v["job_id"] for v in experiment["variants"])
    assert [job["name"] for job in reversed(variants)] == ["two seeds/a", "two seeds/b"]
    assert listed("/v1/jobs?experiment=exp_none") == []
    refused = client.get("/v1/jobs?status=finished")
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "status"

    # Cursor paging keeps the filter: two pages of one, the experiment's two jobs.
    first = client.get(f"/v1/jobs?experiment={experiment['id']}&limit=1").json()
    second = client.get(f"/v1/jobs?experiment={experiment['id']}&limit=1&cursor={first['next_cursor']}").json()
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [job["id"] for job in variants]

    by_job = listed(f"/v1/models?job={on_wine['id']}")
    assert [model["id"] for model in by_job] == [on_wine["model_id"]]
    models_on_wine = listed("/v1/models?dataset=wine&limit=100")
    assert on_wine["model_id"] in [m["id"] for m in models_on_wine] and {m["dataset"] for m in models_on_wine} == {"wine"}
    with Client(str(client.base_url)) as sdk:
        assert [job.id for job in sdk.jobs.list(status="cancelled", limit=None)] == [j["id"] for j in failed_or_cancelled]
        assert [model.id for model in sdk.models.list(job=on_wine["id"])] == [on_wine["model_id"]]


def test_recalibrate_with_no_body_is_accepted_and_named_after_its_parent(client: httpx.Client, digits_model: dict) -> None:
    started = client.post(f"/v1/models/{digits_model['id']}/recalibrate")
    assert started.status_code == 202, started.text
    assert started.json()["recalibration"]["parent_model_id"] == digits_model["id"]
    assert started.json()["name"] == f"{digits_model['name']}-recalibrated"
    assert wait_for(client, started.json()["id"])["status"] == "succeeded"
    wrong_type = client.post(
        f"/v1/models/{digits_model['id']}/recalibrate", content=b"a=1", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def test_no_page_the_service_serves_references_another_host(service: RunningService, client: httpx.Client) -> None:
    own = urlsplit(service.url).netloc
    for page in ("/", "/docs", "/redoc", "/openapi.json"):
        answer = client.get(page)
        assert answer.status_code == 200, page
        hosts = {urlsplit(url).netloc for url in re.findall(r"https?://[^\s\"'<>)]+", answer.text)}
        assert hosts <= {own}, f"{page} names {hosts - {own}}"
        parser = Links()
        parser.feed(answer.text)
        for link in parser.links:
            assert urlsplit(urljoin(service.url + page, link)).netloc == own, f"{page}: {link}"
            assert client.get(urljoin(page, link)).status_code == 200, f"{page}: {link}"
    swagger = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in swagger and "/docs-assets/swagger-ui.css" in swagger
    assert "/docs-assets/redoc.standalone.js" in client.get("/redoc").text


def test_the_sdk_reads_the_clis_settings_and_prints_handles_usefully(
    service: RunningService, client: httpx.Client, digits_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNJOBS_URL", service.url)
    monkeypatch.setenv("BNJOBS_API_KEY", "key-from-the-environment")
    with Client() as sdk:
        assert sdk.url == service.url
        assert sdk.http.headers["Authorization"] == "Bearer key-from-the-environment"
        job = sdk.jobs.get(digits_model["job_id"])
        accuracy = job.info.metrics[-1].val_accuracy
        assert job.status == "succeeded"
        assert repr(job) == f"<Job job_{job.id[4:8]}… {job.name} succeeded 3/3 epochs val_acc={accuracy:.3f}>"
        model = job.model()
        assert repr(model) == f"<Model model_{model.id[6:10]}… {model.name} digits val_acc={accuracy:.3f}>"

    monkeypatch.setenv("BNJOBS_URL", "http://127.0.0.1:9")
    with Client() as unreachable, pytest.raises(ConnectionError, match=r"^could not reach the service at http://127.0.0.1:9 "):
        unreachable.jobs.list()


def test_help_shows_what_each_sdk_call_does() -> None:
    import pydoc

    from bnjobs.client import Job, Jobs

    text = pydoc.render_doc(Client, renderer=pydoc.plaintext)
    assert "BNJOBS_URL" in text and "BNJOBS_API_KEY" in text
    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in (Client, Job, Jobs)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_") and not member.__doc__
    ]
    assert undocumented == []


def test_the_embedded_broker_starts_without_kombus_hostname_warning(
    service: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder broker has no host; kombu's "No hostname was supplied" warning said it should."""
    with caplog.at_level(logging.WARNING, logger="kombu.connection"):
        assert Connection("filesystem://", transport=Transport).info()["hostname"] is None
    assert not [record for record in caplog.records if "No hostname" in record.getMessage()]
    if service.workers:
        pytest.skip("with Redis the broker URL names its host")
    assert "No hostname was supplied" not in service.log.read_text()
