"""Serving folds each BN into the layer before it: the answers stay those of the trained network."""

import threading
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bncore.bn.folding import folded_layer_names
from bncore.serving.served_model import ServedModel
from bncore.training.trained_model import TrainedModel
from tests.conftest import RunningService
from tests.support.processes import free_port, start, stop, wait_ready
from tests.support.trained_models import ARCHITECTURES, RESNET8_BATCHNORMS, digits_inputs, from_artifact, train_digits

FOLDED = {
    "mlp": ["bn1", "bn2"],
    "cnn": ["bn1", "bn2"],
    "after_activation": [],
    "no_batchnorm": [],
    "resnet": RESNET8_BATCHNORMS,
}


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_folded_serving_answers_as_the_unfolded_network_in_eval_mode(architecture: str) -> None:
    trained = train_digits(ARCHITECTURES[architecture])
    stored_before = {name: tensor.clone() for name, tensor in trained.to_tensors().items()}
    inputs = digits_inputs(trained)
    inputs_before = inputs.clone()

    folded, unfolded = ServedModel.of(trained, fold_batchnorm=True), ServedModel.of(trained, fold_batchnorm=False)

    assert folded.graph.folded_layers == FOLDED[architecture] == folded_layer_names(trained.spec.model, fold=True)
    assert unfolded.graph.folded_layers == []
    expected = trained.predict(inputs).logits
    torch.testing.assert_close(folded.predict(inputs).logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unfolded.predict(inputs).logits, expected, rtol=1e-5, atol=1e-5)
    stored_after = trained.to_tensors()
    assert stored_after.keys() == stored_before.keys()
    assert all(torch.equal(stored_after[name], tensor) for name, tensor in stored_before.items())
    assert torch.equal(inputs, inputs_before)


@pytest.mark.parametrize("fold", [True, False])
def test_a_served_resnet_sums_and_activates_in_place_and_still_answers_as_eval_mode(fold: bool) -> None:
    """Each residual sum is written into the output of the block's last layer, each ReLU into its input:
    no new activation-sized tensor beyond one per layer."""
    trained = train_digits(ARCHITECTURES["resnet"], epochs=1)
    inputs = digits_inputs(trained)
    served = ServedModel.of(trained, fold_batchnorm=fold)

    with torch.profiler.profile() as profile:
        logits = served.predict(inputs).logits

    calls = {event.key: event.count for event in profile.key_averages()}
    assert calls.get("aten::add_", 0) == 3  # ResNet-8: one sum per block
    assert "aten::add" not in calls
    assert calls.get("aten::relu_", 0) == 7 and "aten::relu" not in calls
    torch.testing.assert_close(logits, trained.predict(inputs).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "modules_called"),
    [
        ({**ARCHITECTURES["mlp"], "dropout": 0.3}, []),
        (ARCHITECTURES["cnn"], []),
        (ARCHITECTURES["resnet"], []),
        (ARCHITECTURES["after_activation"], ["network.bn1", "network.bn2"]),  # BN after ReLU: nothing absorbs it
    ],
)
def test_a_served_network_calls_its_layers_as_torch_functions_and_answers_as_eval_mode(
    model: dict, modules_called: list[str]
) -> None:
    """At batch 1 a module call costs more than a small layer's arithmetic: the served graph calls the layers'
    functions (dropout, an identity, a folded BN: nothing at all), and only a BN that stays keeps its module."""
    trained = train_digits(model, epochs=1)
    served = ServedModel.of(trained, fold_batchnorm=True)

    called = [str(node.target) for node in served.graph.observed.graph.nodes if node.op == "call_module"]

    assert called == modules_called
    for rows in (1, 5):
        inputs = digits_inputs(trained)[:rows]
        torch.testing.assert_close(served.predict(inputs).logits, trained.predict(inputs).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["cnn", "resnet"])
def test_folding_holds_for_bn_statistics_far_from_their_initial_values(architecture: str) -> None:
    trained = train_digits(ARCHITECTURES[architecture], epochs=1)
    generator = torch.Generator().manual_seed(0)
    for module in trained.network.modules():
        if isinstance(module, nn.BatchNorm2d):
            features = module.num_features
            module.weight.data = torch.empty(features).uniform_(-3, 3, generator=generator)
            module.bias.data = torch.empty(features).uniform_(-2, 2, generator=generator)
            module.running_mean.data = torch.empty(features).uniform_(-5, 5, generator=generator)
            module.running_var.data = torch.empty(features).uniform_(0.01, 20, generator=generator)
    inputs = digits_inputs(trained)

    served = ServedModel.of(trained, fold_batchnorm=True)

    assert served.graph.folded_layers == FOLDED[architecture]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in served.graph.network.modules())
    torch.testing.assert_close(served.predict(inputs).logits, trained.predict(inputs).logits, rtol=1e-5, atol=1e-5)


def test_a_served_model_says_which_bn_layers_are_folded(client: httpx.Client, digits_model: dict) -> None:
    response = client.get(f"/v1/models/{digits_model['id']}")

    assert response.status_code == 200
    assert response.json()["serving"] == {"folded": True, "folded_layers": ["bn1", "bn2", "bn3"]}
    listed = client.get("/v1/models", params={"limit": 100})
    assert listed.status_code == 200
    assert {"folded": True, "folded_layers": ["bn1", "bn2", "bn3"]} in [m["serving"] for m in listed.json()["items"]]


def test_predictions_over_http_equal_the_stored_training_form_network(client: httpx.Client, digits_model: dict) -> None:
    model_id = digits_model["id"]
    samples = load_digits().data[:300]

    predicted = client.post(f"/v1/models/{model_id}/predict", json={"inputs": samples.tolist()})
    artifact = client.get(f"/v1/models/{model_id}/artifact")

    assert predicted.status_code == 200 and artifact.status_code == 200
    stored = from_artifact(artifact.content, digits_model["spec"])
    assert stored.network.fc1.bias is None and isinstance(stored.network.bn1, nn.BatchNorm1d)
    expected = stored.predict(torch.from_numpy(samples).float()).logits.numpy()
    np.testing.assert_allclose(np.array(predicted.json()["outputs"]), expected, rtol=1e-5, atol=1e-5)


def test_with_folding_turned_off_the_same_model_serves_the_same_answers(
    client: httpx.Client, service: RunningService, digits_model: dict
) -> None:
    """A second API process over the same data, started with FOLD_BATCHNORM=0."""
    port = free_port()
    env = {**service.env, "PORT": str(port), "EMBEDDED_WORKERS": "0", "FOLD_BATCHNORM": "0"}
    log = service.data_dir / "unfolded-service.log"
    process = start("service", env, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as unfolded:
            url = f"/v1/models/{digits_model['id']}"
            samples = {"inputs": load_digits().data[:300].tolist()}
            model = unfolded.get(url)
            plain = unfolded.post(f"{url}/predict", json=samples)
            folded = client.post(f"{url}/predict", json=samples)
    finally:
        stop(process)

    assert model.status_code == 200
    assert model.json()["serving"] == {"folded": False, "folded_layers": []}
    assert plain.status_code == 200 and folded.status_code == 200
    np.testing.assert_allclose(plain.json()["outputs"], folded.json()["outputs"], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def resnet() -> TrainedModel:
    return train_digits(ARCHITECTURES["resnet"], epochs=1)


def predict_beside(trained: TrainedModel, work: Callable[[], object]) -> None:
    """Serve `trained` in this thread while `work` runs in another: neither fails, every answer is the same."""
    served = ServedModel.of(trained, fold_batchnorm=True)
    inputs = digits_inputs(trained)[:8]
    expected = served.predict(inputs).probabilities
    failures: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            work()
        except Exception as error:
            failures.append(error)
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    forwards = 0
    while not done.is_set():
        torch.testing.assert_close(served.predict(inputs).probabilities, expected)
        forwards += 1
    worker.join()
    assert failures == [] and forwards > 0


def test_a_model_loading_beside_forward_passes_breaks_neither(resnet: TrainedModel) -> None:
    """torch.fx tracing patches every module call of the process while it runs: the API traces a model
    it loads in one thread while others serve predictions."""
    predict_beside(resnet, lambda: [ServedModel.of(resnet, fold_batchnorm=True) for _ in range(10)])


def test_an_onnx_export_beside_forward_passes_breaks_neither(resnet: TrainedModel) -> None:
    """torch.onnx's exporter traces with torch.fx too (make_fx), patching every module call of the process."""
    predict_beside(resnet, lambda: ServedModel.of(resnet, fold_batchnorm=True).onnx.get())
