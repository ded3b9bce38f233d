"""Recalibration: BN statistics recomputed over data, layer by layer, as a new model version."""

import httpx
import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from sklearn.datasets import load_wine
from torch import nn

from bncore.bn.population_statistics import recalibrated, recompute_batchnorm_statistics
from bncore.data.builtin import load_dataset, raw_samples, split_indices
from bncore.specs import JobSpec
from bncore.training.trained_model import TrainedModel
from tests.support.jobs import train, wait_for
from tests.support.trained_models import train_digits


def numpy_population_statistics(model, inputs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Walk an fc → bn → relu MLP in float64 numpy, each BN normalising with the statistics found so far."""
    x = (inputs - model.input_mean.numpy()) / model.input_std.numpy()
    statistics = {}
    for name, module in model.network.named_children():
        if isinstance(module, nn.Linear):
            x = x @ module.weight.detach().double().numpy().T
            if module.bias is not None:
                x = x + module.bias.detach().double().numpy()
        elif isinstance(module, nn.BatchNorm1d):
            mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)
            statistics[name] = (mean, var)
            gamma, beta = module.weight.detach().double().numpy(), module.bias.detach().double().numpy()
            x = (x - mean) / np.sqrt(var + module.eps) * gamma + beta
        elif isinstance(module, nn.ReLU):
            x = np.maximum(x, 0)
    return statistics


def test_recomputed_statistics_equal_an_independent_numpy_computation() -> None:
    parent = train_digits({"architecture": "mlp", "hidden_sizes": [48, 32, 24]}, epochs=2)
    spec = parent.spec
    dataset = load_dataset("digits")
    train_split, _ = split_indices(dataset.info.num_samples, spec.training.validation_fraction, spec.training.seed)
    inputs = raw_samples(dataset, parent.input_shape, train_split)
    model = recalibrated(parent, inputs)
    expected = numpy_population_statistics(parent, inputs.double().numpy())
    assert set(expected) == {"bn1", "bn2", "bn3"}
    for name, (mean, var) in expected.items():
        bn = model.network.get_submodule(name)
        np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5)
    assert not torch.equal(parent.network.bn1.running_var, model.network.bn1.running_var)


def test_it_is_not_the_average_of_batch_statistics_when_batches_are_not_iid() -> None:
    """swa_utils.update_bn over batches sorted by class lands elsewhere; population statistics do not care."""
    parent = train_digits({"architecture": "mlp", "hidden_sizes": [32, 32]}, epochs=2)
    dataset = load_dataset("digits")
    by_class = np.argsort(dataset.labels, kind="stable")
    inputs = raw_samples(dataset, parent.input_shape, by_class)
    exact = recalibrated(parent, inputs).network.bn2.running_var
    averaged = recalibrated(parent, inputs).network
    standardised = (inputs - parent.input_mean) / parent.input_std
    torch.optim.swa_utils.update_bn([batch for batch in standardised.split(64)], averaged)
    gap = ((averaged.bn2.running_var - exact).abs() / exact).mean()
    assert gap > 0.02
    shuffled = recalibrated(parent, inputs[torch.randperm(len(inputs))]).network.bn2.running_var
    torch.testing.assert_close(shuffled, exact, rtol=1e-5, atol=1e-6)


def test_recalibrating_a_model_over_http_makes_a_new_version(client: httpx.Client, digits_model: dict) -> None:
    parent_id = digits_model["id"]
    response = client.post(f"/v1/models/{parent_id}/recalibrate", json={"max_samples": 500})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["recalibration"] == {"parent_model_id": parent_id, "dataset": None, "max_samples": 500}
    job = wait_for(client, job["id"])
    assert job["status"] == "succeeded", job["error"]

    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["parent_id"] == parent_id and model["spec"] == digits_model["spec"]
    assert model["final_metrics"]["val_accuracy"] > 0.9
    parent_layers = client.get(f"/v1/models/{parent_id}/batchnorm").json()["layers"]
    layers = client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]
    assert [layer["gamma"] for layer in layers] == [layer["gamma"] for layer in parent_layers]
    assert layers[0]["running_var"] != parent_layers[0]["running_var"]
    predicted = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [[0.0] * 64]})
    assert predicted.status_code == 200


def test_recalibration_refuses_data_the_model_cannot_take(client: httpx.Client, digits_model: dict) -> None:
    response = client.post(f"/v1/models/{digits_model['id']}/recalibrate", json={"dataset": {"name": "iris"}})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "dataset.name"
    assert "has 4 features per sample; the model takes 64" in response.json()["error"]["message"]
    assert client.post("/v1/models/model_missing/recalibrate", json={}).status_code == 404
    assert client.post(f"/v1/models/{digits_model['id']}/recalibrate", json={"max_samples": 1}).status_code == 422


def test_recalibrating_on_a_named_dataset_measures_all_of_it(client: httpx.Client) -> None:
    """With `dataset` given (AdaBN when it is another domain), every sample of it is measured, not a split."""
    parent = train(
        client,
        {
            "model": {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]},
            "dataset": {"name": "wine"},
            "training": {"epochs": 3, "batch_size": 16},
        },
    )
    split = wait_for(client, client.post(f"/v1/models/{parent['model_id']}/recalibrate", json={}).json()["id"])
    whole = client.post(f"/v1/models/{parent['model_id']}/recalibrate", json={"dataset": {"name": "wine"}}).json()
    whole = wait_for(client, whole["id"])
    assert whole["status"] == split["status"] == "succeeded"
    assert whole["recalibration"]["dataset"] == {"name": "wine"}
    parent_model = TrainedModel.from_tensors(
        JobSpec.model_validate(parent["spec"]), load_safetensors(client.get(f"/v1/models/{parent['model_id']}/artifact").content)
    )
    # Every wine sample, read by scikit-learn rather than the service, through the parent's own layers.
    mean, var = numpy_population_statistics(parent_model, load_wine().data.astype(np.float64))["bn1"]
    measured = {
        source: client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"][0]
        for source, job in (("split", split), ("whole", whole))
    }
    np.testing.assert_allclose(measured["whole"]["running_mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(measured["whole"]["running_var"], var, rtol=1e-4)
    assert not np.allclose(measured["split"]["running_mean"], mean, rtol=1e-4, atol=1e-5)  # a split is not all of it


class DeclaredOutOfOrder(nn.Module):
    """The BN fed by the other is declared first: module order is not the order data flows in."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 3, bias=False)
        self.early = nn.BatchNorm1d(3)
        self.fc1 = nn.Linear(4, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.fc2(torch.relu(self.early(self.fc1(x)))))


def test_each_layer_is_measured_after_the_layers_that_feed_it_whatever_their_declaration_order() -> None:
    torch.manual_seed(0)
    network = DeclaredOutOfOrder()
    inputs = torch.randn(500, 4) * 3 + 1

    recompute_batchnorm_statistics(network, inputs)

    x = inputs.double().numpy() @ network.fc1.weight.detach().double().numpy().T
    mean, var = x.mean(axis=0), x.var(axis=0, ddof=1)
    np.testing.assert_allclose(network.early.running_var.numpy(), var, rtol=1e-5)
    x = np.maximum((x - mean) / np.sqrt(var + network.early.eps), 0) @ network.fc2.weight.detach().double().numpy().T
    np.testing.assert_allclose(network.late.running_mean.numpy(), x.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(network.late.running_var.numpy(), x.var(axis=0, ddof=1), rtol=1e-5)
