"""BN over the global batch on CPU: two gloo processes give what one process holding the whole batch gives."""

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from bncore.bn.global_batchnorm import GlobalBatchNorm

WORLD = 2
SHAPE = (6, 3, 4, 5)  # each process's share of a (12, 3, 4, 5) batch


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(WORLD * SHAPE[0], *SHAPE[1:], generator=generator, dtype=torch.float64) * 4 + 100
    upstream = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    gamma = torch.rand(SHAPE[1], generator=generator, dtype=torch.float64) + 0.5
    beta = torch.randn(SHAPE[1], generator=generator, dtype=torch.float64)
    return x, upstream, gamma, beta


def _one_rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    x, upstream, gamma, beta = _batch()
    share = slice(rank * SHAPE[0], (rank + 1) * SHAPE[0])
    bn = GlobalBatchNorm(SHAPE[1]).double()
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    local = x[share].clone().requires_grad_()
    output = bn(local)
    (output * upstream[share]).sum().backward()
    torch.save(
        {
            "output": output.detach(),
            "grad_x": local.grad,
            "grad_gamma": bn.weight.grad,
            "grad_beta": bn.bias.grad,
            "running_mean": bn.running_mean,
            "running_var": bn.running_var,
        },
        f"{out}/rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_two_processes_normalise_and_differentiate_as_one_holding_the_whole_batch(tmp_path: Path) -> None:
    mp.spawn(_one_rank, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    x, upstream, gamma, beta = (t.numpy() for t in _batch())
    axes = (0, 2, 3)
    mean, variance = x.mean(axis=axes), x.var(axis=axes)  # biased: what BN normalises with
    shape = (1, -1, 1, 1)
    x_hat = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + 1e-5)
    count = x.size // x.shape[1]
    # d(Σ upstream·y)/dx for y = γ·x̂ + β over the whole batch, written out.
    grad_x_hat = upstream * gamma.reshape(shape)
    grad_x = grad_x_hat - grad_x_hat.mean(axis=axes, keepdims=True) - x_hat * (grad_x_hat * x_hat).mean(axis=axes, keepdims=True)
    grad_x /= np.sqrt(variance.reshape(shape) + 1e-5)

    np.testing.assert_allclose(
        np.concatenate([r["output"].numpy() for r in ranks]), x_hat * gamma.reshape(shape) + beta.reshape(shape), atol=1e-10
    )
    np.testing.assert_allclose(np.concatenate([r["grad_x"].numpy() for r in ranks]), grad_x, atol=1e-10)
    # Each process holds its share of γ's and β's gradient; DistributedDataParallel sums (then averages) them.
    np.testing.assert_allclose(sum(r["grad_gamma"].numpy() for r in ranks), (upstream * x_hat).sum(axis=axes), atol=1e-10)
    np.testing.assert_allclose(sum(r["grad_beta"].numpy() for r in ranks), upstream.sum(axis=axes), atol=1e-10)
    for r in ranks:  # identical on every process: 0.9·initial + 0.1·batch, the variance unbiased
        np.testing.assert_allclose(r["running_mean"].numpy(), 0.1 * mean, atol=1e-10)
        np.testing.assert_allclose(r["running_var"].numpy(), 0.9 + 0.1 * variance * count / (count - 1), atol=1e-10)


def test_outside_a_process_group_it_is_plain_batchnorm() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm1d(4)
    converted = GlobalBatchNorm.convert(nn.Sequential(nn.BatchNorm1d(4)))[0]
    assert isinstance(converted, GlobalBatchNorm)
    x = torch.randn(16, 4) * 3 + 2
    torch.testing.assert_close(converted(x), plain(x))
    torch.testing.assert_close(converted.running_var, plain.running_var)
