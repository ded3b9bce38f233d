"""CIFAR-style residual networks (He et al. 2016, section 4.2): a 3×3 stem, three stages of n basic
blocks at `width`, 2·`width` and 4·`width` channels, global average pooling and a linear head; 6n+2
weighted layers in all.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

Norm = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    """conv → BN → activation → conv → BN, plus the shortcut, then the activation.

    The shortcut is the identity, or a 1×1 convolution with BN where the block changes the shape.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: Norm, activation: Callable[[], nn.Module], bias: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = norm(out_channels)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)
            self.shortcut = nn.Sequential(OrderedDict([("conv", projection), ("bn", norm(out_channels))]))
        self.act2 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(residual + self.shortcut(x))


def build_resnet(
    in_channels: int, num_classes: int, depth: int, width: int, norm: Norm, activation: Callable[[], nn.Module], bias: bool
) -> nn.Sequential:
    """`bias`: whether convolutions have one; not when BN follows them."""
    blocks_per_stage = (depth - 2) // 6
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, width, 3, padding=1, bias=bias)),
        ("bn1", norm(width)),
        ("act1", activation()),
    ]
    channels = width
    for stage, stage_width in enumerate((width, 2 * width, 4 * width), start=1):
        blocks = []
        for index in range(blocks_per_stage):
            stride = 2 if stage > 1 and index == 0 else 1
            blocks.append(BasicBlock(channels, stage_width, stride, norm, activation, bias))
            channels = stage_width
        layers.append((f"stage{stage}", nn.Sequential(*blocks)))
    layers += [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("head", nn.Linear(channels, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def zero_init_residual_(network: nn.Module) -> None:
    """γ = 0 in each block's last BN (or GroupNorm, LayerNorm): every block starts as its shortcut (Goyal et al. 2017)."""
    for module in network.modules():
        if isinstance(module, BasicBlock) and isinstance(module.bn2, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            nn.init.zeros_(module.bn2.weight)
