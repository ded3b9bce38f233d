"""Row 7: achieved FLOP/s of a training epoch of a wide MLP, as a fraction of dense matmul peak.

The epoch is the service's own (bncore.training.loop.train_epoch) on synthetic data; only the matmul
FLOPs count (BN, ReLU, loss and the optimizer step are left out). The peak is the best of several
large float32 matrix products on this machine, in this run, with the same threads.
"""

import itertools
import time

import torch

from bench.report import Row, absolute_row
from bncore.data.builtin import PreparedData
from bncore.specs import ModelSpec, TrainingSpec
from bncore.training.loop import make_optimizer, train_epoch
from bncore.training.networks import build_network

WIDTHS = (784, 1024, 1024, 10)
BATCH = 512
WIDE_MLP = {"architecture": "mlp", "num_classes": WIDTHS[-1], "hidden_sizes": list(WIDTHS[1:-1])}


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def flops_per_sample() -> int:
    """Forward 2·MACs; backward 2·MACs for weight gradients and 2·MACs for input gradients (not the first layer's)."""
    macs = [fan_in * fan_out for fan_in, fan_out in itertools.pairwise(WIDTHS)]
    return 2 * sum(macs) + 2 * sum(macs) + 2 * sum(macs[1:])


def synthetic_data(samples: int) -> PreparedData:
    """Random inputs and labels for the wide MLP, already standardised; a copy of one batch of them for validation."""
    x, y = torch.randn(samples, WIDTHS[0]), torch.randint(0, WIDTHS[-1], (samples,))
    return PreparedData(x, y, x[:BATCH].clone(), y[:BATCH].clone(), torch.zeros(WIDTHS[0]), torch.ones(WIDTHS[0]))


def epoch_flops_per_second(batches: int) -> float:
    training = TrainingSpec(batch_size=BATCH)
    torch.manual_seed(0)
    network = build_network(ModelSpec.model_validate(WIDE_MLP), (WIDTHS[0],))
    samples = batches * BATCH
    data = synthetic_data(samples)
    optimizer = make_optimizer(network, training)
    train_epoch(network, optimizer, data, training, torch.randperm(BATCH * 2), 1, lambda: None)  # warm up
    start = time.perf_counter()
    train_epoch(network, optimizer, data, training, torch.randperm(samples), 1, lambda: None)
    return samples * flops_per_sample() / (time.perf_counter() - start)


def measure(batches: int, matmul_size: int) -> Row:
    peak = matmul_peak(matmul_size)
    achieved = epoch_flops_per_second(batches)
    peak = max(peak, matmul_peak(matmul_size))  # the machine is shared: the better of two peaks around the epoch
    return absolute_row(
        f"7. training epoch, MLP {'-'.join(map(str, WIDTHS))} batch {BATCH}: achieved vs matmul peak",
        achieved / 1e9,
        peak / 1e9,
        "GFLOP/s",
        "—",
        None,
        note=f"{batches * BATCH} synthetic samples; matmul FLOPs only; peak: best {matmul_size}² float32 torch.mm, "
        f"{torch.get_num_threads()} torch threads",
    )
