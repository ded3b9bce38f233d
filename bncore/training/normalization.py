"""The normalisation layer a ModelSpec asks for, at one place of a network."""

from torch import nn

from bncore.bn.ghost_batchnorm import GhostBatchNorm1d, GhostBatchNorm2d
from bncore.bn.renorm import BatchRenorm1d, BatchRenorm2d, RenormLimits
from bncore.specs import ModelSpec


class ChannelLayerNorm(nn.GroupNorm):
    """Layer Normalization of (N, C, H, W): over all of a sample's C·H·W values, with a γ and β per channel.

    GroupNorm with one group, as Wu & He (2018) define LN for images; the class name says which it is.
    """

    def __init__(self, num_channels: int, eps: float) -> None:
        super().__init__(1, num_channels, eps=eps)


NORMALIZATION_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def norm_layer(spec: ModelSpec, features: int, images: bool, ghost: bool = False) -> nn.Module | None:
    """Normalisation of `features` channels (of images, or of vectors); None for `none`.

    `ghost` (training) with `model.virtual_batch_size`: ghost BN, whose state dict is BN's, so the
    network served (plain BN) loads the trained one's weights unchanged.
    """
    kind = spec.normalization
    if kind == "batchnorm" and ghost and spec.virtual_batch_size is not None:
        ghost_batchnorm = GhostBatchNorm2d if images else GhostBatchNorm1d
        return ghost_batchnorm(features, spec.virtual_batch_size, eps=spec.bn_eps, momentum=spec.bn_momentum)
    if kind == "batchnorm":
        batchnorm = nn.BatchNorm2d if images else nn.BatchNorm1d
        return batchnorm(features, eps=spec.bn_eps, momentum=spec.bn_momentum)
    if kind == "batch_renorm":
        limits = RenormLimits(spec.renorm_r_max, spec.renorm_d_max, spec.renorm_warmup_steps)
        renorm = BatchRenorm2d if images else BatchRenorm1d
        return renorm(features, limits, eps=spec.bn_eps, momentum=spec.bn_momentum)
    if kind == "group_norm":
        return nn.GroupNorm(spec.groups, features, eps=spec.bn_eps)
    if kind == "layer_norm":
        return ChannelLayerNorm(features, spec.bn_eps) if images else nn.LayerNorm(features, eps=spec.bn_eps)
    return None


def normalised_widths(spec: ModelSpec) -> list[int]:
    """The channels (features) of every normalised layer, for checks that need them without building the network."""
    if spec.architecture == "mlp":
        return list(spec.hidden_sizes)
    if spec.architecture == "cnn":
        return list(spec.channels)
    return [spec.width, 2 * spec.width, 4 * spec.width]
