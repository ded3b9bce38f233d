"""The graph the service runs: input standardisation, then the trained network with BN folded away.

In eval mode BN is a fixed per-feature affine map, y = γ·(z − μ)/sqrt(σ² + ε) + β. When z is the
output of a Linear/Conv2d layer (and nothing else reads it), the map merges into that layer's
weights and bias, so serving skips one pass over the activations and gives the same answers up to
float rounding.
"""

import copy
import functools
import operator
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from bncore.bn.tracing import MODULE_CALLS
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
    network: nn.Module  # raw inputs in, logits out, in eval mode
    batchnorms: tuple[ServedBatchNorm, ...]  # in the order the forward pass reaches them
    observed: fx.GraphModule  # `network` (the same modules) with a second input, `observe`

    @property
    def folded_layers(self) -> list[str]:
        return [bn.name for bn in self.batchnorms if bn.folded_into is not None]

    def forward(self, inputs: torch.Tensor, observe: Callable[[str, torch.Tensor], None]) -> torch.Tensor:
        """The logits; `observe(bn_name, values)` sees what each BN layer normalises on the way.

        That is the layer's input z, or for a folded layer the output y of the layer that absorbed it,
        from which its `unfold` recovers z. `observe` must read `values` at once: an in-place
        activation overwrites them next.
        """
        with MODULE_CALLS.shared():
            return self.observed.forward(inputs, observe)  # not __call__: a module call costs a few µs


class _Tracer(fx.Tracer):
    """Keeps every BN layer a single call, also subclasses defined outside torch.nn (Batch Renorm)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, BatchNorm) or super().is_leaf_module(module, qualified_name)


def _trace(module: nn.Module) -> fx.GraphModule:
    with MODULE_CALLS.exclusive():  # see bncore.bn.tracing: tracing patches every module call in the process
        return fx.GraphModule(module, _Tracer().trace(module))


def _module(node: fx.Node, modules: dict[str, nn.Module], kind: type | types.UnionType) -> nn.Module | None:
    """The module `node` calls, if it calls one of this kind."""
    if node.op != "call_module":
        return None
    module = modules[str(node.target)]
    return module if isinstance(module, kind) else None


def _absorbing_layer(bn: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The Linear/Conv2d call whose output only this BN reads, if its input comes from one."""
    layer = bn.args[0]
    if not isinstance(layer, fx.Node) or _module(layer, modules, Foldable) is None or len(layer.users) != 1:
        return None
    return layer


def fold_pairs(network: nn.Module) -> dict[str, str]:
    """BN name → the Linear/Conv2d whose output it alone normalises, found by tracing the forward pass."""
    traced = _trace(network)
    modules = dict(traced.named_modules())
    pairs: dict[str, str] = {}
    for node in traced.graph.nodes:
        if _module(node, modules, BatchNorm) is not None and (layer := _absorbing_layer(node, modules)) is not None:
            pairs[str(node.target)] = str(layer.target)
    return pairs


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


# Activations may overwrite their input when it is a fresh tensor that nothing else reads.
_FRESH_OUTPUT = (nn.Linear, nn.Conv2d, BatchNorm)
# The trained network's name inside the served graph, after the input standardisation.
_NETWORK = "network"


@torch.no_grad()
def serving_graph(model: TrainedModel, fold: bool) -> ServingGraph:
    """A new module, so the trained network (and what is stored) stays in its training form.

    The network is traced (torch.fx): each BN whose input is the output of a Linear/Conv2d that
    nothing else reads is merged into it, wherever it sits (a plain stack, a residual block, a
    shortcut projection).
    """
    served = nn.Sequential(
        OrderedDict([("standardize", Standardize(model.input_mean, model.input_std)), (_NETWORK, copy.deepcopy(model.network))])
    )
    graph = _trace(served.eval())
    modules = dict(graph.named_modules())
    taps: list[tuple[fx.Node, str]] = []  # a value to observe, and the BN layer it tells about
    batchnorms: list[ServedBatchNorm] = []
    for node in list(graph.graph.nodes):
        bn = _module(node, modules, BatchNorm)
        if bn is None:
            continue
        name = _trained_name(node)
        layer = _absorbing_layer(node, modules) if fold else None
        if layer is None:
            source = node.args[0]
            assert isinstance(source, fx.Node)
            batchnorms.append(ServedBatchNorm(name, bn, folded_into=None))
            taps.append((source, name))
            continue
        graph.add_submodule(str(layer.target), fold_into(modules[str(layer.target)], bn))
        node.replace_all_uses_with(layer)
        graph.graph.erase_node(node)
        graph.delete_submodule(str(node.target))
        batchnorms.append(ServedBatchNorm(name, copy.deepcopy(bn), _trained_name(layer), PreBatchNorm.of(bn)))
        taps.append((layer, name))
    _in_place(graph)
    _functional(graph, keep={node for node, _ in taps})
    graph.recompile()
    if any(isinstance(module, nn.Conv2d) for module in graph.modules()):
        # NHWC weights make every layer after the first convolution NHWC too, where CPU convolutions and
        # max-pooling vectorise over channels: in NCHW, pooling 8×8 images costs more than the convolutions.
        graph.to(memory_format=torch.channels_last)
    observed = _observing(graph, taps)
    for root in (graph, observed):  # once nothing changes the modules any more
        _children_as_attributes(root)
    return ServingGraph(graph.eval(), tuple(batchnorms), observed)


def _children_as_attributes(root: nn.Module) -> None:
    """Every submodule, parameter and buffer also a plain attribute of its module. The generated forward reads
    `self.network.fc1.weight` for each call, and a read through nn.Module.__getattr__ costs a small pass ~15 % of
    its time. Only once nothing changes the modules: `to()` replaces buffers, which these copies would not follow."""
    for module in root.modules():
        for name, child in module.named_children():
            module.__dict__[name] = child
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            module.__dict__[name] = tensor


def _trained_name(node: fx.Node) -> str:
    """A layer's name in the trained network, as /batchnorm and the stored file name it."""
    return str(node.target).removeprefix(_NETWORK + ".")


def _add_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """fresh + other, written into `fresh` where the sum has its shape and dtype (a residual block's sum)."""
    if fresh.shape == other.shape and fresh.dtype == other.dtype:
        return fresh.add_(other)
    return fresh + other


def _is_sum(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (operator.add, torch.add, _add_into)


def _in_place(graph: fx.GraphModule) -> None:
    """Activations and sums overwrite an input where nothing reads that again: no new tensor to allocate and fill.

    In a residual network at batch 256 the new tensors cost more than the arithmetic: each is tens of
    megabytes that the C library maps afresh, and the first write to each page faults.
    """
    modules = dict(graph.named_modules())

    def fresh(value: object) -> bool:
        return (
            isinstance(value, fx.Node)
            and len(value.users) == 1
            and (_module(value, modules, _FRESH_OUTPUT) is not None or _is_sum(value))
        )

    for node in graph.graph.nodes:
        if _is_sum(node) and not node.kwargs and len(node.args) == 2 and isinstance(node.args[1], fx.Node):
            if fresh(node.args[0]):
                node.target = _add_into
            elif fresh(node.args[1]):
                node.target, node.args = _add_into, node.args[::-1]
            continue
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if module is not None and getattr(module, "inplace", None) is False and node.args and fresh(node.args[0]):
            module.inplace = True


@dataclass(frozen=True)
class _AsFunction:
    """A layer's forward as one torch function: function(input, *the layer's tensors, *its settings)."""

    function: Callable[..., torch.Tensor]
    tensors: tuple[str, ...] = ()
    settings: Callable[[Any], tuple] = lambda layer: ()
    applies: Callable[[Any], bool] = lambda layer: True  # else the layer keeps its own forward


_AS_FUNCTION: dict[type[nn.Module], _AsFunction] = {
    nn.Linear: _AsFunction(torch._C._nn.linear, ("weight", "bias")),
    nn.Conv2d: _AsFunction(
        torch.conv2d,
        ("weight", "bias"),
        lambda c: (c.stride, c.padding, c.dilation, c.groups),
        lambda c: c.padding_mode == "zeros",
    ),
    nn.ReLU: _AsFunction(torch.relu_, applies=lambda relu: relu.inplace),
    nn.Flatten: _AsFunction(torch.flatten, settings=lambda f: (f.start_dim, f.end_dim)),
    nn.MaxPool2d: _AsFunction(
        torch.max_pool2d,
        settings=lambda p: (p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode),
        applies=lambda p: not p.return_indices,
    ),
    nn.AdaptiveAvgPool2d: _AsFunction(
        torch._C._nn.adaptive_avg_pool2d,
        settings=lambda p: (p.output_size,),
        applies=lambda p: isinstance(p.output_size, int),  # a tuple may hold None: keep the input's size
    ),
}
_PASS_THROUGH = (nn.Identity, nn.Dropout)  # in eval mode each returns its input


def _functional(graph: fx.GraphModule, keep: set[fx.Node]) -> None:
    """Each call of a common layer as the torch function its forward calls: at batch 1, calling the modules
    costs a small network about half again its arithmetic. Layers that return their input leave the graph,
    except the nodes in `keep`. Only layers of exactly these types: a subclass may compute something else."""
    modules = dict(graph.named_modules())
    for node in list(graph.graph.nodes):
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if type(module) in _PASS_THROUGH and not module.training and node not in keep:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
            continue
        call = _AS_FUNCTION.get(type(module))
        if call is None or not call.applies(module):
            continue
        with graph.graph.inserting_before(node):
            tensors = [
                graph.graph.get_attr(f"{node.target}.{name}") if getattr(module, name) is not None else None
                for name in call.tensors
            ]
        node.op, node.target, node.args = "call_function", call.function, (node.args[0], *tensors, *call.settings(module))


def _observe(observe: Callable[[str, torch.Tensor], None], name: str, values: torch.Tensor) -> None:
    observe(name, values)


def _observing(graph: fx.GraphModule, taps: list[tuple[fx.Node, str]]) -> fx.GraphModule:
    """The same modules, with each tapped value passed to `observe` as soon as it is computed."""
    observed = fx.Graph()
    copies: dict[fx.Node, fx.Node] = {}
    output = observed.graph_copy(graph.graph, copies)
    observed.output(output)
    [inputs] = [node for node in observed.nodes if node.op == "placeholder"]
    with observed.inserting_after(inputs):
        observe = observed.placeholder("observe")
    for node, name in taps:
        with observed.inserting_after(copies[node]):
            observed.call_function(_observe, (observe, name, copies[node]))
    return fx.GraphModule(graph, observed)


def folded_layer_names(spec: ModelSpec, fold: bool) -> list[str]:
    """The BN layers serving folds for this architecture, found without loading any weights."""
    if not fold:
        return []
    return list(_folded_layer_names(spec.model_dump_json()))


@functools.lru_cache(maxsize=1024)
def _folded_layer_names(spec_json: str) -> tuple[str, ...]:
    """Cached by spec: a listing of models asks for each, and tracing a deep resnet takes a tenth of a second."""
    spec = ModelSpec.model_validate_json(spec_json)
    with torch.device("meta"):
        network = build_network(spec, tuple(spec.input_shape or ()))
    return tuple(fold_pairs(network))
