"""The graph the service runs: input standardisation, then the trained network with BN folded away.

In eval mode BN is a fixed per-feature affine map, y = γ·(z − μ)/sqrt(σ² + ε) + β. When z is the
output of a Linear/Conv2d layer, the map merges into that layer's weights and bias, so serving
skips one pass over the activations and gives the same answers up to float rounding.
"""

import copy
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from bncore.specs import ModelSpec
from bncore.training.networks import build_network
from bncore.training.trained_model import Standardize, TrainedModel

BatchNorm = nn.modules.batchnorm._BatchNorm
Foldable = nn.Linear | nn.Conv2d

# Below this |γ| a BN output hardly depends on its input: the pre-BN value cannot be recovered from it.
GAMMA_FLOOR = 1e-5


@dataclass(frozen=True)
class PreBatchNorm:
    """Eval-mode BN undone on features along dim 1, in float64: z = (y − β)·sqrt(σ² + ε)/γ + μ.

    An affine map per feature, z = y·scale + shift, so the moments of z follow from those of y.
    Features with |γ| ≤ GAMMA_FLOOR come back as μ: their BN output says nothing about z.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, bn: BatchNorm) -> "PreBatchNorm":
        gamma, mean = bn.weight.double(), bn.running_mean.double()
        observable = gamma.abs() > GAMMA_FLOOR
        spread = torch.sqrt(bn.running_var.double() + bn.eps) / torch.where(observable, gamma, torch.ones_like(gamma))
        scale = torch.where(observable, spread, torch.zeros_like(spread))
        return cls(scale, torch.where(observable, mean - bn.bias.double() * spread, mean))

    def moments(self, mean: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-feature mean and variance of z, from those of y."""
        return mean * self.scale + self.shift, variance * self.scale.square()


@dataclass(frozen=True)
class ServedBatchNorm:
    """A BN layer of the trained network; `folded_into` names the layer that absorbed it, if one did."""

    name: str
    module: BatchNorm
    folded_into: str | None
    unfold: PreBatchNorm | None = None  # for a folded layer: its input z from the folded layer's output


@dataclass(frozen=True)
class ServingGraph:
    network: nn.Sequential  # raw inputs in, logits out, in eval mode
    batchnorms: tuple[ServedBatchNorm, ...]

    @property
    def folded_layers(self) -> list[str]:
        return [bn.name for bn in self.batchnorms if bn.folded_into is not None]

    @cached_property
    def _steps(self) -> list[tuple[nn.Module, str | None, str | None]]:
        """Per layer: the module, the BN layer whose input it takes, and the folded BN layer its output feeds."""
        taps = {bn.folded_into or bn.name: bn for bn in self.batchnorms}
        steps: list[tuple[nn.Module, str | None, str | None]] = []
        for name, module in self.network.named_children():
            tap = taps.get(name)
            folded = tap is not None and tap.folded_into is not None
            steps.append((module, tap.name if tap and not folded else None, tap.name if tap and folded else None))
        return steps

    def forward(self, inputs: torch.Tensor, observe: Callable[[str, torch.Tensor], None]) -> torch.Tensor:
        """The logits; `observe(bn_name, values)` sees what each BN layer normalises on the way.

        That is the layer's input z, or for a folded layer the output y of the layer that absorbed it,
        from which its `unfold` recovers z. `observe` must read `values` at once: an in-place
        activation overwrites them next.
        """
        x = inputs
        for module, takes, feeds in self._steps:
            if takes is not None:
                observe(takes, x)
            x = module(x)
            if feeds is not None:
                observe(feeds, x)
        return x


def fold_pairs(network: nn.Module) -> dict[str, str]:
    """BN name → the Linear/Conv2d directly before it, whose output it normalises."""
    children = list(network.named_children())
    return {
        bn_name: layer_name
        for (layer_name, layer), (bn_name, bn) in itertools.pairwise(children)
        if isinstance(layer, Foldable) and isinstance(bn, BatchNorm)
    }


@torch.no_grad()
def fold_into(layer: Foldable, bn: BatchNorm) -> Foldable:
    """A copy of `layer` that computes bn(layer(x)) in eval mode.

    W' = W·s and b' = (b − μ)·s + β with s = γ/sqrt(σ² + ε), computed in float64.
    """
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    folded = copy.deepcopy(layer)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    folded.weight = nn.Parameter((layer.weight.double() * scale.view(shape)).to(layer.weight.dtype))
    folded.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(layer.weight.dtype))
    return folded


@torch.no_grad()
def serving_graph(model: TrainedModel, fold: bool) -> ServingGraph:
    """A new module, so the trained network (and what is stored) stays in its training form."""
    pairs = fold_pairs(model.network) if fold else {}
    children = dict(model.network.named_children())
    absorbed = {layer: bn for bn, layer in pairs.items()}
    layers: list[tuple[str, nn.Module]] = [("standardize", Standardize(model.input_mean, model.input_std))]
    batchnorms: list[ServedBatchNorm] = []
    for name, module in children.items():
        if name in pairs:
            batchnorms.append(ServedBatchNorm(name, copy.deepcopy(module), pairs[name], PreBatchNorm.of(module)))
        elif name in absorbed:
            layers.append((name, fold_into(module, children[absorbed[name]])))
        else:
            served = copy.deepcopy(module)
            if getattr(served, "inplace", None) is False:
                # An activation overwrites its input, which nothing reads again: no new tensor to allocate and fill.
                served.inplace = True
            layers.append((name, served))
            if isinstance(served, BatchNorm):
                batchnorms.append(ServedBatchNorm(name, served, folded_into=None))
    network = nn.Sequential(OrderedDict(layers)).eval()
    if any(isinstance(module, nn.Conv2d) for module in network.modules()):
        # NHWC weights make every layer after the first convolution NHWC too, where CPU convolutions and
        # max-pooling vectorise over channels: in NCHW, pooling 8×8 images costs more than the convolutions.
        network.to(memory_format=torch.channels_last)
    return ServingGraph(network, tuple(batchnorms))


def folded_layer_names(spec: ModelSpec, fold: bool) -> list[str]:
    """The BN layers serving folds for this architecture, found without loading any weights."""
    if not fold:
        return []
    with torch.device("meta"):
        network = build_network(spec, tuple(spec.input_shape or ()))
    return list(fold_pairs(network))
