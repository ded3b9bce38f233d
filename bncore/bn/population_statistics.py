"""Population statistics for BN layers: the paper's Algorithm 2, made exact.

Each BN layer gets the mean and the unbiased variance of its inputs over all samples (and all
positions, for convolutions), with every earlier BN layer already using its new statistics, so
each layer is measured on exactly what inference will feed it. Averaging per-batch statistics in
training mode (`torch.optim.swa_utils.update_bn`) is not the same when batches are not i.i.d.
With data from another domain, this is AdaBN-style test-time adaptation.
"""

import copy
from collections.abc import Callable

import torch
from torch import nn

from bncore.bn.moments import ShiftedMoments, feature_rows
from bncore.training.trained_model import TrainedModel

BATCH = 2048


@torch.inference_mode()
def recompute_batchnorm_statistics(
    network: nn.Module, inputs: torch.Tensor, interrupt: Callable[[], None] = lambda: None
) -> None:
    """Set every BN layer's running statistics to the population statistics of `inputs`, layer by layer.

    `interrupt` is called before each batch; what it raises stops the computation (a cancelled job).
    """
    network.eval()
    for bn in _in_forward_order(network, inputs[:2]):
        moments = ShiftedMoments()
        handle = bn.register_forward_pre_hook(lambda module, args, moments=moments: moments.add(feature_rows(args[0]).double()))
        try:
            for batch in inputs.split(BATCH):
                interrupt()
                network(batch)
        finally:
            handle.remove()
        mean, variance = moments.mean_and_unbiased_variance()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(variance)


def _in_forward_order(network: nn.Module, example: torch.Tensor) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers in the order a forward pass reaches them: each after every BN layer that feeds it.

    Not necessarily the modules' order: a residual block may declare its shortcut's BN anywhere.
    """
    reached: list[nn.modules.batchnorm._BatchNorm] = []
    handles = [
        module.register_forward_pre_hook(lambda module, args: reached.append(module))
        for module in network.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        network(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(reached))


def recalibrated(model: TrainedModel, raw_inputs: torch.Tensor, interrupt: Callable[[], None] = lambda: None) -> TrainedModel:
    """A copy of `model` whose BN statistics are those of `raw_inputs`, standardised as the model does."""
    if len(raw_inputs) < 2:
        raise ValueError("population statistics need at least 2 samples")
    network = copy.deepcopy(model.network)
    recompute_batchnorm_statistics(network, (raw_inputs - model.input_mean) / model.input_std, interrupt)
    return TrainedModel(model.spec, network, model.input_mean, model.input_std)
