"""Batch Renormalization, GroupNorm and LayerNorm jobs train, serve, export and (where it applies) recalibrate
through the API; every number is checked against numpy or onnxruntime, not against the service's own code."""

from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest
from safetensors.numpy import load as load_numpy
from sklearn.datasets import load_digits

from bncore.data.builtin import split_indices
from bnjobs import Client
from tests.conftest import RunningService
from tests.support.jobs import job_request, train, wait_for

DIGITS = load_digits().data.astype(np.float32)
# A warm-up of 5 steps: the renorm correction (r, d) is on for most of the 44 steps of two epochs.
RENORM = {"normalization": "batch_renorm", "hidden_sizes": [32, 16], "renorm_warmup_steps": 5}


@pytest.fixture(scope="module")
def renorm_model(service: RunningService) -> dict[str, Any]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        job = train(client, job_request(model=RENORM, training={"epochs": 2}))
        response = client.get(f"/v1/models/{job['model_id']}")
        assert response.status_code == 200
        return response.json()


def stored(client: httpx.Client, model_id: str) -> dict[str, np.ndarray]:
    response = client.get(f"/v1/models/{model_id}/artifact")
    assert response.status_code == 200
    return load_numpy(response.content)


def mlp_in_numpy(tensors: dict[str, np.ndarray], x: np.ndarray, layers: int, eps: float = 1e-5) -> np.ndarray:
    """Eval-mode logits of an mlp with BN, written out: standardise, then Linear → BN(running stats) → ReLU."""
    h = ((x - tensors["input.mean"]) / tensors["input.std"]).astype(np.float64)
    for i in range(1, layers + 1):
        z = h @ tensors[f"network.fc{i}.weight"].T.astype(np.float64)
        bn = {k: tensors[f"network.bn{i}.{k}"].astype(np.float64) for k in ("running_mean", "running_var", "weight", "bias")}
        h = np.maximum((z - bn["running_mean"]) / np.sqrt(bn["running_var"] + eps) * bn["weight"] + bn["bias"], 0)
    return h @ tensors["network.head.weight"].T + tensors["network.head.bias"]


def onnx_logits(client: httpx.Client, model_id: str, x: np.ndarray) -> np.ndarray:
    exported = client.get(f"/v1/models/{model_id}/artifact", params={"format": "onnx"})
    assert exported.status_code == 200
    session = onnxruntime.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    return session.run(None, {given.name: x})[0]


def predicted_logits(client: httpx.Client, model_id: str, x: np.ndarray) -> np.ndarray:
    response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200
    return np.asarray(response.json()["outputs"])


def test_a_batch_renorm_model_is_served_as_bn_folded_and_exported(client: httpx.Client, renorm_model: dict) -> None:
    model_id = renorm_model["id"]
    assert renorm_model["serving"] == {"folded": True, "folded_layers": ["bn1", "bn2"]}
    layers = client.get(f"/v1/models/{model_id}/batchnorm")
    assert layers.status_code == 200
    assert [(layer["name"], layer["kind"]) for layer in layers.json()["layers"]] == [
        ("bn1", "batch_renorm"),
        ("bn2", "batch_renorm"),
    ]
    tensors = stored(client, model_id)
    assert "network.fc1.bias" not in tensors  # a layer feeding Batch Renorm has no bias, as with BN
    for layer in layers.json()["layers"]:
        np.testing.assert_allclose(layer["running_var"], tensors[f"network.{layer['name']}.running_var"], rtol=1e-6)
        assert layer["num_batches_tracked"] == 2 * 23  # 2 epochs of ceil(1437 / 64) steps

    served = predicted_logits(client, model_id, DIGITS[:300])

    np.testing.assert_allclose(served, mlp_in_numpy(tensors, DIGITS[:300], layers=2), rtol=0, atol=1e-5)
    np.testing.assert_allclose(onnx_logits(client, model_id, DIGITS[:300]), served, rtol=0, atol=1e-4)


def test_a_batch_renorm_model_is_watched_for_drift_and_recalibrates_to_numpy_population_statistics(
    client: httpx.Client, renorm_model: dict
) -> None:
    model_id = renorm_model["id"]
    assert predicted_logits(client, model_id, DIGITS[:200] * 3 + 5).shape == (200, 10)
    drift = client.get(f"/v1/models/{model_id}/drift")
    assert drift.status_code == 200
    assert drift.json()["applies"] is True and drift.json()["note"] is None
    assert [layer["name"] for layer in drift.json()["layers"]] == ["bn1", "bn2"]
    assert drift.json()["layers"][0]["mean_shift"] > 1  # inputs in other units: the first layer sees it

    started = client.post(f"/v1/models/{model_id}/recalibrate", json={})
    assert started.status_code == 202
    job = wait_for(client, started.json()["id"])
    assert job["status"] == "succeeded", job

    tensors = stored(client, job["model_id"])
    train_rows, _ = split_indices(len(DIGITS), 0.2, 0)
    standardised = (DIGITS[train_rows] - tensors["input.mean"]) / tensors["input.std"]
    pre_bn1 = standardised.astype(np.float64) @ tensors["network.fc1.weight"].T.astype(np.float64)
    np.testing.assert_allclose(tensors["network.bn1.running_mean"], pre_bn1.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tensors["network.bn1.running_var"], pre_bn1.var(axis=0, ddof=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "normalization, architecture, kind, groups",
    [
        ({"normalization": "group_norm", "groups": 4}, {"architecture": "cnn", "input_shape": [1, 8, 8]}, "group_norm", 4),
        ({"normalization": "layer_norm"}, {"architecture": "cnn", "input_shape": [1, 8, 8]}, "layer_norm", 1),
        ({"normalization": "layer_norm"}, {"hidden_sizes": [32, 16]}, "layer_norm", 1),
        ({"normalization": "group_norm", "groups": 8}, {"hidden_sizes": [32, 16]}, "group_norm", 8),
    ],
    ids=["cnn-group_norm", "cnn-layer_norm", "mlp-layer_norm", "mlp-group_norm"],
)
def test_a_batch_independent_model_lists_gamma_and_beta_folds_nothing_exports_and_refuses_recalibration(
    client: httpx.Client, normalization: dict, architecture: dict, kind: str, groups: int
) -> None:
    job = train(client, job_request(model={**architecture, **normalization}, training={"epochs": 1}))
    model_id = job["model_id"]

    model = client.get(f"/v1/models/{model_id}")
    assert model.status_code == 200
    serving = model.json()["serving"]
    assert serving["folded"] is False and serving["folded_layers"] == []
    assert serving["note"].startswith("folding does not apply") and kind in serving["note"]

    layers = client.get(f"/v1/models/{model_id}/batchnorm")
    assert layers.status_code == 200
    tensors = stored(client, model_id)
    assert [layer["name"] for layer in layers.json()["layers"]] == ["bn1", "bn2"]
    for layer in layers.json()["layers"]:
        assert layer["kind"] == kind and layer["groups"] == groups
        assert layer["running_mean"] is None and layer["running_var"] is None and layer["num_batches_tracked"] is None
        assert "no running statistics" in layer["note"]
        np.testing.assert_array_equal(np.float32(layer["gamma"]), tensors[f"network.{layer['name']}.weight"])
        np.testing.assert_array_equal(np.float32(layer["beta"]), tensors[f"network.{layer['name']}.bias"])
    assert not any(name.endswith("running_mean") for name in tensors)
    layer_before = "conv1" if architecture.get("architecture") == "cnn" else "fc1"
    assert f"network.{layer_before}.bias" not in tensors  # β takes the bias's role, as with BN

    samples = DIGITS[:50].reshape(-1, *model.json()["input_shape"])
    served = predicted_logits(client, model_id, samples)
    np.testing.assert_allclose(onnx_logits(client, model_id, samples), served, rtol=0, atol=1e-4)
    # Batch-independent by construction: a sample's answer is the same alone as in a batch.
    np.testing.assert_allclose(predicted_logits(client, model_id, samples[7:8]), served[7:8], rtol=0, atol=1e-5)

    drift = client.get(f"/v1/models/{model_id}/drift")
    assert drift.status_code == 200
    assert drift.json()["applies"] is False and drift.json()["layers"] == [] and drift.json()["drifted"] is False
    assert drift.json()["note"].startswith("drift monitoring does not apply")

    refused = client.post(f"/v1/models/{model_id}/recalibrate", json={})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert [f["field"] for f in error["fields"]] == ["model_id"]
    assert "no running statistics" in error["message"] and "nothing to recalibrate" in error["message"]


ADVICE = "'batch_renorm', 'group_norm' or 'layer_norm'"


def test_bn_with_a_tiny_batch_or_class_sorted_batches_is_accepted_with_advice(
    client: httpx.Client, service: RunningService
) -> None:
    tiny = client.post("/v1/jobs", json=job_request(training={"epochs": 1, "batch_size": 4}))
    assert tiny.status_code == 202
    [warning] = tiny.json()["warnings"]
    assert "training.batch_size 4 is under 8" in warning and ADVICE in warning

    sorted_batches = client.post("/v1/jobs", json=job_request(training={"epochs": 1, "batch_order": "class_sorted"}))
    assert sorted_batches.status_code == 202
    [warning] = sorted_batches.json()["warnings"]
    assert "class_sorted" in warning and ADVICE in warning
    finished = wait_for(client, sorted_batches.json()["id"])
    assert finished["status"] == "succeeded" and finished["warnings"] == [warning]  # kept on every read

    remedied = client.post(
        "/v1/jobs", json=job_request(model={"normalization": "group_norm"}, training={"epochs": 1, "batch_size": 4})
    )
    assert remedied.status_code == 202
    assert remedied.json()["warnings"] == []
    for job in (tiny, remedied):
        assert wait_for(client, job.json()["id"])["status"] == "succeeded"
    with Client(service.url) as sdk:
        assert repr(sdk.jobs.get(tiny.json()["id"])).endswith(" (1 warning)>")
        assert "warning" not in repr(sdk.jobs.get(remedied.json()["id"]))
