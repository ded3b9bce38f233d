"""Build the network a ModelSpec describes: [Linear|Conv](bias=False) → norm → activation [→ dropout], then a head;
or a residual network (see resnet.py). The norm is BN, Batch Renorm, GroupNorm or LayerNorm (normalization.py).
Then its initial weights, as `model.init` and `model.init_scale` say.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from bncore.specs import ModelSpec, num_features
from bncore.training.normalization import norm_layer
from bncore.training.resnet import build_resnet, zero_init_residual_

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
    # No module at all for rate 0, so that a job without dropout builds (and trains) as before dropout existed.
    dropout = [(f"drop{index}", nn.Dropout(spec.dropout))] if spec.dropout > 0 else []
    if bn is None:
        return [(f"{_kind(layer)}{index}", layer), activation, *dropout]
    normalize = (f"bn{index}", bn)
    if spec.bn_position == "before_activation":
        return [(f"{_kind(layer)}{index}", layer), normalize, activation, *dropout]
    return [(f"{_kind(layer)}{index}", layer), activation, normalize, *dropout]


def _kind(layer: nn.Module) -> str:
    return "conv" if isinstance(layer, nn.Conv2d) else "fc"


def _feeds_norm(spec: ModelSpec) -> bool:
    return spec.normalization != "none" and spec.bn_position == "before_activation"


def build_network(spec: ModelSpec, input_shape: tuple[int, ...], for_training: bool = False) -> nn.Sequential:
    """A fresh network; the caller seeds torch first for reproducible weights.

    A layer whose output goes straight into a normalisation (BN, Batch Renorm, GroupNorm, LayerNorm)
    has no bias: the normalisation subtracts a mean the bias is part of, and β takes the bias's role
    (`model.bias_before_bn` keeps it before BN, to show that it is redundant). `for_training` with
    `model.virtual_batch_size`: ghost BN layers (see training.normalization.norm_layer).
    """
    network = _layers(spec, input_shape, for_training)
    initialise_(network, spec)
    return network


def _with_redundant_bias(layer: nn.Linear | nn.Conv2d, spec: ModelSpec) -> nn.Module:
    """Under `model.bias_before_bn`, a bias for a layer feeding BN, starting at 0 and drawing no random
    number: the network then computes what the one without it does, from the same seed."""
    if spec.bias_before_bn and _feeds_norm(spec):
        layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0]))
    return layer


def _layers(spec: ModelSpec, input_shape: tuple[int, ...], ghost: bool) -> nn.Sequential:
    bias = not _feeds_norm(spec)
    if spec.architecture == "resnet":

        def norm(features: int) -> nn.Module:
            return norm_layer(spec, features, images=True, ghost=ghost) or nn.Identity()

        return build_resnet(input_shape[0], spec.num_classes, spec.depth, spec.width, norm, ACTIVATIONS[spec.activation], bias)
    layers: list[tuple[str, nn.Module]] = []
    if spec.architecture == "mlp":
        if len(input_shape) > 1:
            layers.append(("flatten", nn.Flatten()))
        width = num_features(input_shape)
        for i, hidden in enumerate(spec.hidden_sizes, start=1):
            norm = norm_layer(spec, hidden, images=False, ghost=ghost)
            layers += _block(i, _with_redundant_bias(nn.Linear(width, hidden, bias=bias), spec), norm, spec)
            width = hidden
    else:
        channels, height, width_px = input_shape
        for i, out_channels in enumerate(spec.channels, start=1):
            conv = _with_redundant_bias(
                nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2, bias=bias), spec
            )
            layers += _block(i, conv, norm_layer(spec, out_channels, images=True, ghost=ghost), spec)
            # Halve the image while at least 2x2 remains for the head to see.
            if min(height, width_px) >= 4:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
                height, width_px = height // 2, width_px // 2
            channels = out_channels
        layers.append(("flatten", nn.Flatten()))
        width = channels * height * width_px
    layers.append(("head", nn.Linear(width, spec.num_classes)))
    return nn.Sequential(OrderedDict(layers))


WEIGHT_INITS: dict[str, Callable[[torch.Tensor, ModelSpec], object]] = {
    "kaiming_normal": lambda weight, spec: nn.init.kaiming_normal_(weight, nonlinearity="relu"),
    "xavier_normal": lambda weight, spec: nn.init.xavier_normal_(weight),
    "normal": lambda weight, spec: nn.init.normal_(weight, std=spec.init_std),
    # Self-normalising networks need weights with variance 1/fan_in (Klambauer et al. 2017).
    "lecun_normal": lambda weight, spec: nn.init.kaiming_normal_(weight, nonlinearity="linear"),
}


@torch.no_grad()
def initialise_(network: nn.Module, spec: ModelSpec) -> None:
    """Initial weights as the spec says; with the defaults, PyTorch's own, untouched (SELU without BN: LeCun's)."""
    init = spec.init
    if init == "default" and spec.activation == "selu" and spec.normalization == "none":
        init = "lecun_normal"
    weighted = [module for module in network.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if init != "default":
        for module in weighted:
            WEIGHT_INITS[init](module.weight, spec)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    if spec.init_scale != 1.0:
        for module in weighted:
            module.weight.mul_(spec.init_scale)
    if spec.zero_init_residual:
        zero_init_residual_(network)


def parameter_count(spec: ModelSpec, input_shape: tuple[int, ...]) -> int:
    """Trainable parameters, counted on the meta device so nothing is allocated."""
    with torch.device("meta"):
        network = build_network(spec, input_shape)
    return sum(p.numel() for p in network.parameters())
