"""Ghost BN: each virtual batch is normalised with its own statistics, as the formula says."""

import numpy as np
import torch

from bncore.bn.ghost_batchnorm import GhostBatchNorm1d, GhostBatchNorm2d


def test_each_virtual_batch_is_normalised_on_its_own_and_updates_the_running_statistics() -> None:
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(10, 3))
    layer = GhostBatchNorm1d(3, virtual_batch_size=4).double()

    output = layer(torch.from_numpy(x)).detach().numpy()

    chunks = [x[0:4], x[4:8], x[8:10]]
    expected = np.concatenate([(c - c.mean(0)) / np.sqrt(c.var(0) + 1e-5) for c in chunks])
    np.testing.assert_allclose(output, expected, atol=1e-12)
    mean, var = np.zeros(3), np.ones(3)
    for c in chunks:
        mean = 0.9 * mean + 0.1 * c.mean(0)
        var = 0.9 * var + 0.1 * c.var(0, ddof=1)
    np.testing.assert_allclose(layer.running_mean.numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), var, atol=1e-12)
    assert int(layer.num_batches_tracked) == 3


def test_a_trailing_single_sample_joins_the_virtual_batch_before_it() -> None:
    x = np.random.default_rng(1).normal(size=(9, 2, 2, 2))
    layer = GhostBatchNorm2d(2, virtual_batch_size=4).double()

    output = layer(torch.from_numpy(x)).detach().numpy()

    axes = (0, 2, 3)
    chunks = [x[0:4], x[4:9]]
    expected = np.concatenate([(c - c.mean(axes, keepdims=True)) / np.sqrt(c.var(axes, keepdims=True) + 1e-5) for c in chunks])
    np.testing.assert_allclose(output, expected, atol=1e-12)


def test_at_inference_it_is_plain_batchnorm() -> None:
    layer = GhostBatchNorm1d(3, virtual_batch_size=2)
    layer(torch.randn(8, 3) * 2 + 1)
    layer.eval()
    x = torch.randn(5, 3)
    torch.testing.assert_close(layer(x), (x - layer.running_mean) / (layer.running_var + layer.eps).sqrt())
