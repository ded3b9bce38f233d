"""A user reproduces the paper's recipe: dropout taken out, and BN making the initialisation matter less."""

import httpx
import pytest
import torch
from torch import nn

from bncore.serving.model_cache import ServedModel
from bncore.specs import ModelSpec
from bncore.training.networks import build_network
from tests.support.jobs import wait_for
from tests.support.trained_models import digits_inputs, train_digits

WIDE = (512,)  # one wide layer: sample standard deviations close to the intended ones


def seeded_network(input_shape: tuple[int, ...] = WIDE, **model: object) -> nn.Sequential:
    torch.manual_seed(0)
    return build_network(ModelSpec.model_validate({"num_classes": 10, **model}), input_shape)


def weights(network: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in network.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_dropout_follows_each_hidden_activation_and_only_when_asked() -> None:
    mlp = seeded_network(architecture="mlp", hidden_sizes=[32, 32], dropout=0.3)
    cnn = seeded_network((1, 8, 8), architecture="cnn", channels=[8, 16], dropout=0.3)

    assert [name for name, _ in mlp.named_children()] == ["fc1", "bn1", "act1", "drop1", "fc2", "bn2", "act2", "drop2", "head"]
    assert [name for name, _ in cnn.named_children()][:5] == ["conv1", "bn1", "act1", "drop1", "pool1"]
    assert all(m.p == 0.3 for m in mlp.modules() if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, nn.Dropout) for m in seeded_network(architecture="mlp").modules())


def test_a_model_trained_with_dropout_serves_deterministically_with_bn_folded() -> None:
    trained = train_digits({"architecture": "mlp", "hidden_sizes": [64, 64], "dropout": 0.2})
    inputs = digits_inputs(trained)

    served = ServedModel.of(trained, fold_batchnorm=True)

    assert served.graph.folded_layers == ["bn1", "bn2"]
    expected = trained.predict(inputs).logits
    torch.testing.assert_close(served.predict(inputs).logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(served.predict(inputs).logits, served.predict(inputs).logits, rtol=0, atol=0)
    for module in trained.network.modules():  # dropout as in training, BN still with its frozen statistics
        if isinstance(module, nn.Dropout):
            module.train()
    with torch.no_grad():
        dropped = trained.network((inputs - trained.input_mean) / trained.input_std)
    assert not torch.allclose(dropped, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "init, expected_std",
    [
        ("kaiming_normal", (2 / 512) ** 0.5),  # fan-in 512, ReLU gain √2
        ("xavier_normal", (2 / (512 + 512)) ** 0.5),
        ("normal", 0.05),
    ],
)
def test_each_initialisation_draws_weights_of_its_standard_deviation(init: str, expected_std: float) -> None:
    network = seeded_network(architecture="mlp", hidden_sizes=[512], normalization="none", init=init, init_std=0.05)

    hidden = network.fc1.weight
    assert hidden.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(hidden.mean().item()) < 0.05 * expected_std
    assert torch.equal(network.fc1.bias, torch.zeros_like(network.fc1.bias))


def test_init_scale_multiplies_every_initial_weight_and_nothing_else() -> None:
    model = {"architecture": "resnet", "depth": 8, "width": 4}
    plain, scaled = seeded_network((3, 8, 8), **model), seeded_network((3, 8, 8), **model, init_scale=3.0)

    for a, b in zip(weights(plain), weights(scaled), strict=True):
        torch.testing.assert_close(b, a * 3.0, rtol=0, atol=0)
    for a, b in zip(plain.modules(), scaled.modules(), strict=True):
        if isinstance(a, nn.BatchNorm2d):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_the_defaults_build_the_network_a_job_built_before_these_fields() -> None:
    """No dropout module, PyTorch's initialisation untouched: the same weights from the same seed."""
    today = seeded_network(architecture="mlp", hidden_sizes=[32, 32])
    spelled_out = seeded_network(architecture="mlp", hidden_sizes=[32, 32], dropout=0.0, init="default", init_scale=1.0)
    torch.manual_seed(0)
    by_hand = nn.Sequential(nn.Linear(512, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 32, bias=False))

    assert list(today.state_dict()) == list(spelled_out.state_dict())
    for name, tensor in today.state_dict().items():
        assert torch.equal(spelled_out.state_dict()[name], tensor)
    assert torch.equal(today.fc1.weight, by_hand[0].weight) and torch.equal(today.fc2.weight, by_hand[3].weight)


def test_an_experiment_varies_architecture_dropout_and_initialisation(client: httpx.Client) -> None:
    base = {
        "model": {"architecture": "cnn", "num_classes": 10, "input_shape": [1, 8, 8], "channels": [8, 16]},
        "dataset": {"name": "digits"},
        "training": {"epochs": 2, "seed": 0},
    }
    response = client.post(
        "/v1/experiments",
        json={
            "name": "recipe",
            "base": base,
            "variants": [
                {"name": "dropout", "overrides": {"model": {"dropout": 0.25}}},
                {"name": "scaled init", "overrides": {"model": {"init": "kaiming_normal", "init_scale": 4.0}}},
                {"name": "resnet-8", "overrides": {"model": {"architecture": "resnet", "depth": 8, "width": 8}}},
            ],
        },
    )
    assert response.status_code == 202, response.text

    jobs = {v["name"]: wait_for(client, v["job_id"]) for v in response.json()["variants"]}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}, jobs
    assert jobs["dropout"]["spec"]["model"]["dropout"] == 0.25
    assert jobs["scaled init"]["spec"]["model"]["init_scale"] == 4.0
    assert jobs["resnet-8"]["spec"]["model"]["depth"] == 8
    layers = client.get(f"/v1/models/{jobs['resnet-8']['model_id']}/batchnorm").json()["layers"]
    assert "stage3.0.shortcut.bn" in [layer["name"] for layer in layers]

    bad = client.post(
        "/v1/experiments",
        json={"name": "typo", "base": base, "variants": [{"name": "ok"}, {"name": "deep", "overrides": {"model": {"depth": 9}}}]},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "variants[1].overrides.model.depth"
    assert "6n+2" in bad.json()["error"]["message"]
