"""Build the network a ModelSpec describes: [Linear|Conv](bias=False) → BN → activation, then a head."""

from collections import OrderedDict

import torch
from torch import nn

from bncore.specs import ModelSpec, num_features

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
}


def _block(index: int, layer: nn.Module, bn: nn.Module | None, spec: ModelSpec) -> list[tuple[str, nn.Module]]:
    activation = (f"act{index}", ACTIVATIONS[spec.activation]())
    if bn is None:
        return [(f"{_kind(layer)}{index}", layer), activation]
    normalize = (f"bn{index}", bn)
    if spec.bn_position == "before_activation":
        return [(f"{_kind(layer)}{index}", layer), normalize, activation]
    return [(f"{_kind(layer)}{index}", layer), activation, normalize]


def _kind(layer: nn.Module) -> str:
    return "conv" if isinstance(layer, nn.Conv2d) else "fc"


def _feeds_bn(spec: ModelSpec) -> bool:
    return spec.normalization == "batchnorm" and spec.bn_position == "before_activation"


def build_network(spec: ModelSpec, input_shape: tuple[int, ...]) -> nn.Sequential:
    """A fresh network; the caller seeds torch first for reproducible weights.

    A layer whose output goes straight into BN has no bias: BN subtracts the mean, and β takes
    the bias's role.
    """
    use_bn = spec.normalization == "batchnorm"
    bias = not _feeds_bn(spec)
    layers: list[tuple[str, nn.Module]] = []
    if spec.architecture == "mlp":
        if len(input_shape) > 1:
            layers.append(("flatten", nn.Flatten()))
        width = num_features(input_shape)
        for i, hidden in enumerate(spec.hidden_sizes, start=1):
            bn = nn.BatchNorm1d(hidden, eps=spec.bn_eps, momentum=spec.bn_momentum) if use_bn else None
            layers += _block(i, nn.Linear(width, hidden, bias=bias), bn, spec)
            width = hidden
    else:
        channels, height, width_px = input_shape
        for i, out_channels in enumerate(spec.channels, start=1):
            conv = nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2, bias=bias)
            bn = nn.BatchNorm2d(out_channels, eps=spec.bn_eps, momentum=spec.bn_momentum) if use_bn else None
            layers += _block(i, conv, bn, spec)
            # Halve the image while at least 2x2 remains for the head to see.
            if min(height, width_px) >= 4:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
                height, width_px = height // 2, width_px // 2
            channels = out_channels
        layers.append(("flatten", nn.Flatten()))
        width = channels * height * width_px
    layers.append(("head", nn.Linear(width, spec.num_classes)))
    network = nn.Sequential(OrderedDict(layers))
    if spec.activation == "selu" and not use_bn:
        _lecun_normal_(network)
    return network


def _lecun_normal_(network: nn.Module) -> None:
    """Self-normalising networks need weights with variance 1/fan_in (Klambauer et al. 2017)."""
    for module in network.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def parameter_count(spec: ModelSpec, input_shape: tuple[int, ...]) -> int:
    """Trainable parameters, counted on the meta device so nothing is allocated."""
    with torch.device("meta"):
        network = build_network(spec, input_shape)
    return sum(p.numel() for p in network.parameters())
