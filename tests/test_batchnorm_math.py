"""The BN layers our networks use behave as the paper and PyTorch define them."""

import numpy as np
import pytest
import torch
from torch import nn

from bncore.jobs.execution import train_model
from bncore.jobs.planning import plan_job
from bncore.specs import JobSpec, ModelSpec
from bncore.training.networks import build_network


def mlp(**fields: object) -> nn.Sequential:
    return build_network(ModelSpec(architecture="mlp", num_classes=10, **fields), (64,))


def bn_layers(network: nn.Module) -> list[nn.BatchNorm1d | nn.BatchNorm2d]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_training_mode_output_has_mean_beta_and_std_gamma_per_feature() -> None:
    torch.manual_seed(0)
    network = mlp()
    for bn in bn_layers(network):
        nn.init.uniform_(bn.weight, 0.5, 2.0)
        nn.init.uniform_(bn.bias, -1.0, 1.0)
    outputs: dict[str, torch.Tensor] = {}
    for name, module in network.named_modules():
        if isinstance(module, nn.BatchNorm1d):
            module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
    network.train()
    network(torch.randn(256, 64) * 3 + 1)
    assert set(outputs) == {"bn1", "bn2", "bn3"}
    for name, bn in zip(outputs, bn_layers(network), strict=True):
        y = outputs[name]
        torch.testing.assert_close(y.mean(dim=0), bn.bias.detach(), atol=1e-4, rtol=0)
        torch.testing.assert_close(y.std(dim=0, unbiased=False), bn.weight.detach(), atol=1e-3, rtol=1e-3)


def test_normalisation_uses_batch_mean_and_biased_variance_then_gamma_beta() -> None:
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(5, eps=1e-3)
    nn.init.uniform_(bn.weight, 0.5, 2.0)
    nn.init.uniform_(bn.bias, -1.0, 1.0)
    x = torch.randn(32, 5, dtype=torch.float64).float() * 4 - 2
    out = bn.train()(x).detach().numpy()
    xs = x.numpy().astype(np.float64)
    mu, var = xs.mean(axis=0), xs.var(axis=0)  # var: biased, ddof=0
    expected = bn.weight.detach().numpy() * (xs - mu) / np.sqrt(var + 1e-3) + bn.bias.detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_eval_mode_uses_the_running_statistics() -> None:
    torch.manual_seed(2)
    bn = nn.BatchNorm1d(4)
    bn.train()
    for _ in range(20):
        bn(torch.randn(16, 4) * 2 + 3)
    bn.eval()
    x = torch.randn(3, 4)
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(bn(x), expected.detach())


def test_a_layer_that_feeds_bn_has_no_bias_and_bn_precedes_the_activation() -> None:
    network = mlp(hidden_sizes=[8, 8])
    names = [name for name, _ in network.named_children()]
    assert names == ["fc1", "bn1", "act1", "fc2", "bn2", "act2", "head"]
    assert network.fc1.bias is None and network.fc2.bias is None
    assert network.head.bias is not None


def test_bn_after_activation_keeps_the_bias_of_the_layer_before() -> None:
    network = mlp(hidden_sizes=[8], bn_position="after_activation")
    assert [name for name, _ in network.named_children()] == ["fc1", "act1", "bn1", "head"]
    assert network.fc1.bias is not None


def test_without_normalization_there_is_no_bn_layer() -> None:
    network = mlp(normalization="none", activation="selu")
    assert bn_layers(network) == []
    assert network.fc1.bias is not None


def test_cnn_blocks_are_conv_bn_activation_with_bias_free_convolutions() -> None:
    network = build_network(ModelSpec(architecture="cnn", num_classes=10, channels=[4, 8]), (1, 8, 8))
    assert isinstance(network.bn1, nn.BatchNorm2d) and network.conv1.bias is None
    assert network(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("architecture, input_shape", [("mlp", None), ("cnn", [1, 8, 8])])
def test_running_statistics_equal_an_independent_recomputation_of_the_momentum_update(
    architecture: str, input_shape: list[int] | None
) -> None:
    """Replay every training-mode input each BN layer saw, apply the update in numpy, compare."""
    spec = plan_job(
        JobSpec.model_validate(
            {
                "model": {
                    "architecture": architecture,
                    "num_classes": 10,
                    "input_shape": input_shape,
                    "hidden_sizes": [32, 32],
                    "channels": [4, 8],
                    "bn_momentum": 0.2,
                },
                "dataset": {"name": "digits"},
                "training": {"epochs": 2, "batch_size": 100, "seed": 3},
            }
        ),
        10**7,
        10**9,
    )
    seen: dict[nn.Module, list[np.ndarray]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            x = inputs[0].detach().double()
            # One row per value a BN feature normalises: samples, and positions for convolutions.
            rows = x.movedim(1, -1).reshape(-1, x.shape[1]) if x.ndim == 4 else x
            seen.setdefault(module, []).append(rows.numpy())

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        trained, _ = train_model(spec, torch.device("cpu"))
    finally:
        hook.remove()

    momentum = 0.2
    assert len(seen) == 2
    for module in bn_layers(trained.network):
        mean, var = np.zeros(module.num_features), np.ones(module.num_features)
        for x in seen[module]:
            mean = (1 - momentum) * mean + momentum * x.mean(axis=0)
            var = (1 - momentum) * var + momentum * x.var(axis=0, ddof=1)  # unbiased, as PyTorch
        assert int(module.num_batches_tracked) == len(seen[module])
        np.testing.assert_allclose(module.running_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(module.running_var.numpy(), var, rtol=1e-4, atol=1e-5)


def test_mixed_precision_keeps_bn_in_fp32_and_still_learns() -> None:
    spec = plan_job(
        JobSpec.model_validate(
            {
                "model": {"architecture": "mlp", "num_classes": 10, "hidden_sizes": [64, 64]},
                "dataset": {"name": "digits"},
                "training": {"epochs": 3, "mixed_precision": True},
            }
        ),
        10**7,
        10**9,
    )
    dtypes: set[tuple[str, torch.dtype]] = set()

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.training:
            kind = "bn" if isinstance(module, nn.modules.batchnorm._BatchNorm) else type(module).__name__
            dtypes.add((kind, output.dtype))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        trained, result = train_model(spec, torch.device("cpu"))
    finally:
        hook.remove()
    assert ("Linear", torch.bfloat16) in dtypes
    assert ("bn", torch.float32) in dtypes and ("bn", torch.bfloat16) not in dtypes
    assert all(bn.running_var.dtype == torch.float32 for bn in bn_layers(trained.network))
    assert result.history[-1].val_accuracy > 0.9
