"""Population statistics for BN layers: the paper's Algorithm 2, made exact.

Each BN layer gets the mean and the unbiased variance of its inputs over all samples (and all
positions, for convolutions), with every earlier BN layer already using its new statistics, so
each layer is measured on exactly what inference will feed it. Averaging per-batch statistics in
training mode (`torch.optim.swa_utils.update_bn`) is not the same when batches are not i.i.d.
With data from another domain, this is AdaBN-style test-time adaptation.
"""

import copy

import torch
from torch import nn

from bncore.serving.drift import feature_rows
from bncore.training.trained_model import TrainedModel

BATCH = 2048


class _ShiftedMoments:
    """Sums of (x − K) and (x − K)² in float64, K from the first batch: stable where mean² ≫ variance."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        if self.shift is None:
            self.shift = rows.mean(dim=0)
            self.total = torch.zeros_like(self.shift)
            self.squares = torch.zeros_like(self.shift)
        centred = rows - self.shift
        self.count += len(rows)
        self.total += centred.sum(dim=0)
        self.squares += (centred * centred).sum(dim=0)

    def mean_and_unbiased_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.shift is not None and self.total is not None and self.squares is not None
        offset = self.total / self.count
        variance = (self.squares - self.count * offset * offset) / (self.count - 1)
        return self.shift + offset, variance


@torch.inference_mode()
def recompute_batchnorm_statistics(network: nn.Module, inputs: torch.Tensor) -> None:
    """Set every BN layer's running statistics to the population statistics of `inputs`, layer by layer."""
    network.eval()
    for bn in (m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        moments = _ShiftedMoments()
        handle = bn.register_forward_pre_hook(lambda module, args: moments.add(feature_rows(args[0]).double()))
        try:
            for batch in inputs.split(BATCH):
                network(batch)
        finally:
            handle.remove()
        mean, variance = moments.mean_and_unbiased_variance()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(variance)


def recalibrated(model: TrainedModel, raw_inputs: torch.Tensor) -> TrainedModel:
    """A copy of `model` whose BN statistics are those of `raw_inputs`, standardised as the model does."""
    if len(raw_inputs) < 2:
        raise ValueError("population statistics need at least 2 samples")
    network = copy.deepcopy(model.network)
    recompute_batchnorm_statistics(network, (raw_inputs - model.input_mean) / model.input_std)
    return TrainedModel(model.spec, network, model.input_mean, model.input_std)
