"""Reading the normalisation layers of a network: BN (and Batch Renorm) with their statistics, GroupNorm and LayerNorm without."""

from dataclasses import dataclass
from typing import Literal

from torch import nn

from bncore.bn.renorm import _BatchRenorm
from bncore.training.normalization import ChannelLayerNorm

LayerKind = Literal["batchnorm", "batch_renorm", "group_norm", "layer_norm"]


@dataclass(frozen=True)
class BatchNormLayer:
    """One layer's learned affine parameters (γ, β) and, for BN and Batch Renorm, its frozen test-time statistics."""

    name: str
    num_features: int
    eps: float
    momentum: float | None
    gamma: list[float]
    beta: list[float]
    running_mean: list[float] | None
    running_var: list[float] | None
    num_batches_tracked: int | None
    kind: LayerKind = "batchnorm"
    groups: int | None = None  # group_norm: groups of channels; layer_norm: 1

    @property
    def has_statistics(self) -> bool:
        return self.running_mean is not None


def _batchnorm(name: str, module: nn.modules.batchnorm._BatchNorm) -> BatchNormLayer:
    return BatchNormLayer(
        name=name,
        num_features=module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        gamma=module.weight.detach().cpu().tolist(),
        beta=module.bias.detach().cpu().tolist(),
        running_mean=module.running_mean.cpu().tolist(),
        running_var=module.running_var.cpu().tolist(),
        num_batches_tracked=int(module.num_batches_tracked),
        kind="batch_renorm" if isinstance(module, _BatchRenorm) else "batchnorm",
    )


def _batch_independent(name: str, module: nn.GroupNorm | nn.LayerNorm) -> BatchNormLayer:
    if isinstance(module, nn.GroupNorm):
        kind: LayerKind = "layer_norm" if isinstance(module, ChannelLayerNorm) else "group_norm"
        features, groups = module.num_channels, module.num_groups
    else:
        kind, features, groups = "layer_norm", module.normalized_shape[0], 1
    return BatchNormLayer(
        name=name,
        num_features=features,
        eps=module.eps,
        momentum=None,
        gamma=module.weight.detach().cpu().tolist(),
        beta=module.bias.detach().cpu().tolist(),
        running_mean=None,
        running_var=None,
        num_batches_tracked=None,
        kind=kind,
        groups=groups,
    )


def normalization_layers(network: nn.Module) -> list[BatchNormLayer]:
    """Every BN, Batch Renorm, GroupNorm and LayerNorm layer, in module order."""
    layers = []
    for name, module in network.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            layers.append(_batchnorm(name, module))
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            layers.append(_batch_independent(name, module))
    return layers


def batchnorm_layers(network: nn.Module) -> list[BatchNormLayer]:
    """The layers with running statistics: BN and Batch Renorm."""
    return [layer for layer in normalization_layers(network) if layer.has_statistics]
