"""A user downloads a model, as the stored safetensors file or as ONNX, and runs it elsewhere."""

import json

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from sklearn.datasets import load_digits

from tests.conftest import RunningService
from tests.support.jobs import job_request, train
from tests.support.metrics import scrape, value
from tests.support.trained_models import from_artifact


@pytest.fixture(scope="module")
def cnn_model(service: RunningService) -> dict:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        job = train(client, job_request(model={"architecture": "cnn", "input_shape": [1, 8, 8], "channels": [8, 16]}))
        return client.get(f"/v1/models/{job['model_id']}").json()


def safetensors_metadata(payload: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file: an 8-byte little-endian header size, then a JSON header."""
    size = int.from_bytes(payload[:8], "little")
    return json.loads(payload[8 : 8 + size])["__metadata__"]


def test_the_safetensors_download_is_the_stored_training_form_file(
    client: httpx.Client, service: RunningService, digits_model: dict
) -> None:
    model_id = digits_model["id"]

    response = client.get(f"/v1/models/{model_id}/artifact")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{model_id}.safetensors"'
    assert response.content == (service.data_dir / "artifacts" / f"{model_id}.safetensors").read_bytes()
    assert client.get(f"/v1/models/{model_id}/artifact", params={"format": "safetensors"}).content == response.content
    assert json.loads(safetensors_metadata(response.content)["spec"]) == digits_model["spec"]
    network = from_artifact(response.content, digits_model["spec"]).network
    assert network.fc1.bias is None  # unfolded: β of bn1 plays the bias
    for bn in (network.bn1, network.bn2, network.bn3):  # learned γ and statistics, not their initial values
        assert not torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("fixture", ["digits_model", "cnn_model"])
def test_the_onnx_download_answers_raw_inputs_like_pytorch_for_any_batch_size(
    client: httpx.Client, fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    samples = load_digits().data.astype(np.float32).reshape(-1, *model["input_shape"])

    exported = client.get(f"/v1/models/{model['id']}/artifact", params={"format": "onnx"})
    stored = client.get(f"/v1/models/{model['id']}/artifact")

    assert exported.status_code == 200 and stored.status_code == 200
    assert exported.headers["content-disposition"] == f'attachment; filename="{model["id"]}.onnx"'
    graph = onnx.load_from_string(exported.content).graph
    assert "BatchNormalization" not in {node.op_type for node in graph.node}
    session = onnxruntime.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    assert given.shape == ["batch", *model["input_shape"]]
    pytorch = from_artifact(stored.content, model["spec"])
    for batch in (samples[:1], samples[:7], samples[:500]):
        [logits] = session.run(None, {given.name: batch})
        expected = pytorch.predict(torch.from_numpy(batch)).logits.numpy()
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_a_models_onnx_file_is_exported_once_then_kept(client: httpx.Client) -> None:
    model_id = train(client, job_request(training={"epochs": 1}))["model_id"]
    exports = value(scrape(client), "bnjobs_onnx_exports_total")
    downloads = [client.get(f"/v1/models/{model_id}/artifact", params={"format": "onnx"}) for _ in range(2)]
    assert [d.status_code for d in downloads] == [200, 200] and downloads[0].content == downloads[1].content
    assert value(scrape(client), "bnjobs_onnx_exports_total") == exports + 1


def test_an_unknown_format_is_refused_naming_the_format_field(client: httpx.Client, digits_model: dict) -> None:
    response = client.get(f"/v1/models/{digits_model['id']}/artifact", params={"format": "pickle"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == ["format"]
    assert "'safetensors' or 'onnx'" in error["message"]


def test_unknown_models_and_damaged_files_are_not_handed_out(client: httpx.Client, service: RunningService) -> None:
    for fmt in ("safetensors", "onnx"):
        response = client.get("/v1/models/model_missing/artifact", params={"format": fmt})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    model_id = train(client, job_request(training={"epochs": 1}))["model_id"]
    path = service.data_dir / "artifacts" / f"{model_id}.safetensors"
    path.write_bytes(path.read_bytes()[:-10])

    for fmt in ("safetensors", "onnx"):
        response = client.get(f"/v1/models/{model_id}/artifact", params={"format": fmt})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "artifact_unavailable"
        assert "sha256" in response.json()["error"]["message"]
