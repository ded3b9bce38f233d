"""A user reproduces each of BN's claims with one request and reads whether it held."""

import json
import time
from typing import Any

import httpx
import pytest

from bncore.jobs.presets import presets
from tests.test_cli import bnjobs

PRESETS = sorted(presets())


def wait_for_experiment(client: httpx.Client, experiment_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/experiments/{experiment_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] == "finished":
            return response.json()
        time.sleep(0.2)
    raise AssertionError(f"experiment {experiment_id} did not finish in {timeout}s")


def test_the_presets_are_listed_with_their_specs(client: httpx.Client) -> None:
    response = client.get("/v1/experiments/presets")
    assert response.status_code == 200
    listed = {preset["name"]: preset for preset in response.json()["presets"]}
    assert set(listed) == {
        "faster-training",
        "higher-learning-rate",
        "initialisation",
        "regularisation",
        "accelerated-decay",
        "covariate-shift",
        "selu-instead",
        "bias-is-redundant",
        "small-batch",
        "non-iid-batches",
    }
    faster = listed["faster-training"]
    assert faster["request"]["base"]["model"]["hidden_sizes"] == [100, 100, 100]
    assert faster["request"]["base"]["model"]["activation"] == "sigmoid"
    assert [v["name"] for v in faster["request"]["variants"]] == ["batchnorm", "plain"]
    assert {"kind", "statement", "params"} <= set(faster["claim"])


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_runs_end_to_end_and_judges_its_claim(client: httpx.Client, name: str) -> None:
    response = client.post("/v1/experiments", json={"preset": name, "epochs": 1})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["preset"] == name and created["claim"] is None
    assert created["name"] == f"{name} (1 epochs)"

    experiment = wait_for_experiment(client, created["id"])
    claim = experiment["claim"]
    assert set(claim) == {"statement", "held", "evidence"}
    assert isinstance(claim["held"], bool) and claim["statement"] == presets()[name].claim["statement"]
    assert claim["evidence"] and all(isinstance(key, str) for key in claim["evidence"])
    job = client.get(f"/v1/jobs/{experiment['variants'][0]['job_id']}").json()
    assert job["spec"]["training"]["epochs"] == 1
    assert client.get(f"/v1/experiments/{created['id']}").json()["claim"] == claim  # judged once, stored

    if name == "bias-is-redundant":
        evidence = claim["evidence"]
        assert claim["held"], evidence
        assert evidence["max_bias_gradient"] <= 1e-6 * evidence["max_weight_gradient"]
        assert evidence["prediction_agreement"] >= 0.99
    if name == "covariate-shift":
        activations = client.get(f"/v1/jobs/{experiment['variants'][1]['job_id']}/activations").json()
        assert [layer["name"] for layer in activations["layers"]] == ["act1", "act2", "act3"]


def test_a_preset_on_another_dataset(client: httpx.Client) -> None:
    response = client.post("/v1/experiments", json={"preset": "faster-training", "epochs": 1, "dataset": {"name": "iris"}})
    assert response.status_code == 202, response.text
    experiment = wait_for_experiment(client, response.json()["id"])
    job = client.get(f"/v1/jobs/{experiment['variants'][0]['job_id']}").json()
    assert job["spec"]["dataset"] == {"name": "iris"} and job["spec"]["model"]["num_classes"] == 3
    assert experiment["claim"]["evidence"]["target_accuracy"] == 0.9


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"preset": "no-such-claim"}, "preset", "faster-training"),
        ({"preset": "faster-training", "base": {}}, "body", "without base"),
        ({"preset": "faster-training", "epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"name": "x", "base": {}, "variants": [{"name": "a"}], "epochs": 2}, "body", "goes with `preset`"),
        ({"name": "x"}, "body", "`base`, `variants`"),
    ],
)
def test_a_bad_preset_request_is_refused_by_field(client: httpx.Client, body: dict, field: str, words: str) -> None:
    response = client.post("/v1/experiments", json=body)
    assert response.status_code == 422
    text = json.dumps(response.json())
    assert field in text and words in text, text


def test_the_cli_runs_a_preset_and_prints_the_verdict(service, client: httpx.Client) -> None:
    result = bnjobs(service, "experiment", "--preset", "bias-is-redundant", "--epochs", "1", "--watch")
    assert result.returncode == 0, result.stderr
    experiment = client.get(f"/v1/experiments/{result.stdout.splitlines()[0]}").json()
    assert experiment["claim"]["held"]
    assert "claim HELD: " + experiment["claim"]["statement"] in result.stdout
    assert "max_bias_gradient" in result.stdout

    listing = bnjobs(service, "experiments", "presets")
    assert listing.returncode == 0, listing.stderr
    assert "covariate-shift" in listing.stdout
