"""Batch Renormalization (Ioffe 2017) against the paper's formulas, written out in numpy."""

import numpy as np
import torch
from torch import nn

from bncore.bn.renorm import BatchRenorm1d, BatchRenorm2d, RenormLimits

EPS = 1e-5


def _renormalised(x: np.ndarray, mean: np.ndarray, sigma: np.ndarray, r_max: float, d_max: float) -> tuple[np.ndarray, ...]:
    batch_mean, batch_sigma = x.mean(axis=0), np.sqrt(x.var(axis=0) + EPS)
    r = np.clip(batch_sigma / sigma, 1 / r_max, r_max)
    d = np.clip((batch_mean - mean) / sigma, -d_max, d_max)
    return (x - batch_mean) / batch_sigma * r + d, batch_mean, batch_sigma


def test_training_corrects_the_batch_statistics_towards_the_moving_averages() -> None:
    limits = RenormLimits(r_max=1.5, d_max=0.5, warmup_steps=0)
    layer = BatchRenorm1d(3, limits, eps=EPS, momentum=0.1).double()
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])
    layer.running_mean.copy_(torch.from_numpy(mean))
    layer.running_var.copy_(torch.from_numpy(var))
    x = np.random.default_rng(0).normal([3.0, -2.0, 0.0], [1.0, 2.0, 1.0], size=(32, 3))

    output = layer(torch.from_numpy(x)).detach().numpy()

    sigma = np.sqrt(var + EPS)
    expected, batch_mean, batch_sigma = _renormalised(x, mean, sigma, 1.5, 0.5)
    np.testing.assert_allclose(output, expected, atol=1e-12)  # γ = 1, β = 0
    np.testing.assert_allclose(layer.running_mean.numpy(), mean + 0.1 * (batch_mean - mean), atol=1e-12)
    # The paper averages σ: eval mode's sqrt(running_var + ε) is σ + 0.1·(σ_B − σ).
    np.testing.assert_allclose(np.sqrt(layer.running_var.numpy() + EPS), sigma + 0.1 * (batch_sigma - sigma), atol=1e-12)


def test_r_and_d_are_constants_in_the_backward_pass() -> None:
    limits = RenormLimits(r_max=2.0, d_max=1.0, warmup_steps=0)
    layer = BatchRenorm2d(2, limits, eps=EPS).double()
    layer.running_var.fill_(9.0)
    x = (torch.randn(8, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_()
    upstream = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sigma = float(np.sqrt(9.0 + EPS))
    dims = (0, 2, 3)
    r = ((x.var(dim=dims, unbiased=False) + EPS).sqrt() / sigma).clamp(0.5, 2.0).detach().view(1, -1, 1, 1)
    d = (x.mean(dim=dims) / sigma).clamp(-1.0, 1.0).detach().view(1, -1, 1, 1)
    batch_norm = (x - x.mean(dim=dims, keepdim=True)) / (x.var(dim=dims, unbiased=False, keepdim=True) + EPS).sqrt()
    (expected_grad,) = torch.autograd.grad(((batch_norm * r + d) * upstream).sum(), x)

    (grad,) = torch.autograd.grad((layer(x) * upstream).sum(), x)

    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)


def test_it_is_plain_batchnorm_during_warm_up_and_at_inference() -> None:
    torch.manual_seed(0)
    renorm, plain = BatchRenorm1d(4, RenormLimits(warmup_steps=10)), nn.BatchNorm1d(4)
    x = torch.randn(16, 4) * 3 + 2
    torch.testing.assert_close(renorm(x), plain(x))
    assert isinstance(renorm, nn.modules.batchnorm._BatchNorm)  # folding, drift and ONNX see a BN layer
    renorm.eval()
    sigma = (renorm.running_var + renorm.eps).sqrt()
    torch.testing.assert_close(renorm(x), (x - renorm.running_mean) / sigma)


def test_the_limits_relax_after_the_warm_up() -> None:
    limits = RenormLimits(r_max=3.0, d_max=5.0, warmup_steps=100)
    assert limits.at(0) == limits.at(99) == (1.0, 0.0)
    assert limits.at(150) == (2.0, 2.5)
    assert limits.at(200) == limits.at(10_000) == (3.0, 5.0)
