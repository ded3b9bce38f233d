"""Internal covariate shift made visible: the distribution of the inputs to each non-linearity during training.

As in the paper's Figure 1(b, c), every `every_steps` optimisation steps the 15th, 50th and 85th percentiles
(and the mean and standard deviation) of the inputs to each tracked activation module are measured on one
fixed probe batch from the training split, so that the curves of one job, and of two jobs, compare.

The probe measures the network being trained, so it runs in train mode (BN normalises with the probe
batch's own statistics) but leaves training untouched: no gradient, BN running statistics saved and put
back, dropout off for the probe (its noise is not the shift being measured), and the random number
generators forked, so a job trains to the same weights with tracking on or off. The values of a layer
are pooled over the batch and all of its units (and positions, for images).
"""

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from bncore.specs import TrackActivationsSpec
from bncore.training.networks import ACTIVATIONS

PROBE_SAMPLES = 256
QUANTILES = (0.15, 0.50, 0.85)
STATISTICS = ("p15", "p50", "p85", "mean", "std")


def activation_layer_names(network: nn.Module) -> list[str]:
    """The names of the network's non-linearities, in the order the forward pass meets them."""
    kinds = tuple(ACTIVATIONS.values())
    return [name for name, module in network.named_modules() if isinstance(module, kinds)]


def unknown_layers(network: nn.Module, spec: TrackActivationsSpec) -> list[str]:
    """The names asked for that are no activation module of `network`."""
    if spec.layers == "all":
        return []
    known = set(activation_layer_names(network))
    return [name for name in spec.layers if name not in known]


def probe_indices(train_samples: int, seed: int) -> torch.Tensor:
    """The same training samples every time for the same seed and split, resumed or not."""
    return torch.randperm(train_samples, generator=torch.Generator().manual_seed(seed))[:PROBE_SAMPLES]


def summarise(values: torch.Tensor) -> list[float]:
    """[p15, p50, p85, mean, std] of all values; percentiles interpolated linearly, as numpy's default.

    The order statistics are picked from the values sorted in their own precision (a float32 value is
    exactly a float64 one, so the order is the same), interpolated in Python floats. On the CPU numpy's
    vectorised sort takes a sixth of the time its partition at the six positions needed takes, at 25,600
    values and at 4 million; torch's CPU sort is slower still. Elsewhere torch sorts on the device
    (torch.quantile refuses over 16 million values).
    """
    flat = values.detach().flatten()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    positions = [q * (len(flat) - 1) for q in QUANTILES]
    below, above = [math.floor(p) for p in positions], [math.ceil(p) for p in positions]
    if flat.device.type == "cpu":
        ordered = np.sort(flat.numpy())
        order = [float(ordered[i]) for i in (*below, *above)]
    else:
        order = flat.sort().values[torch.tensor([*below, *above], device=flat.device)].tolist()
    flat = flat.double()
    low, high = order[: len(QUANTILES)], order[len(QUANTILES) :]
    percentiles = [lo + (hi - lo) * (p - b) for lo, hi, p, b in zip(low, high, positions, below, strict=True)]
    spread = flat.std().item() if len(flat) > 1 else 0.0
    return [*percentiles, flat.mean().item(), spread]


@contextlib.contextmanager
def _untouched(network: nn.Module) -> Iterator[None]:
    """Whatever the probe's forward pass changes, put back: BN buffers, dropout's mode, the random generators."""
    saved = [(buffer, buffer.clone()) for buffer in network.buffers()]
    dropouts = [module for module in network.modules() if isinstance(module, nn.modules.dropout._DropoutNd)]
    devices = [parameter.device for parameter in network.parameters() if parameter.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for module in dropouts:
            module.eval()
        try:
            yield
        finally:
            for module in dropouts:
                module.train()
            for buffer, copy in saved:
                buffer.copy_(copy)


class ActivationProbe:
    """Measures the tracked layers of `network` on `inputs`; one `measure()` per recorded step."""

    def __init__(self, network: nn.Module, spec: TrackActivationsSpec, inputs: torch.Tensor) -> None:
        self.network = network
        self.every_steps = spec.every_steps
        self.layers = activation_layer_names(network) if spec.layers == "all" else list(spec.layers)
        self.inputs = inputs
        modules = dict(network.named_modules())
        self._tracked = [(name, modules[name]) for name in self.layers]

    def measure(self, step: int) -> dict:
        """{"step", "layers": {name: [p15, p50, p85, mean, std]}} at optimisation step `step`."""
        seen: dict[str, torch.Tensor] = {}
        handles = [
            module.register_forward_pre_hook(lambda module, args, name=name: seen.__setitem__(name, args[0]))
            for name, module in self._tracked
        ]
        was_training = self.network.training  # in a training loop it is: no walk over the modules to set it twice
        try:
            with _untouched(self.network):
                if not was_training:
                    self.network.train()
                self.network(self.inputs)
        finally:
            for handle in handles:
                handle.remove()
            if not was_training:
                self.network.eval()
        return {"step": step, "layers": {name: summarise(seen[name]) for name in self.layers}}


def activation_series(records: list[dict]) -> list[dict]:
    """The API's shape: per layer its steps and one list per statistic, from the records of all epochs."""
    series: dict[str, dict[str, list]] = {}
    for record in records:
        for name, values in record["layers"].items():
            layer = series.setdefault(name, {"name": name, "steps": [], **{key: [] for key in STATISTICS}})
            layer["steps"].append(record["step"])
            for key, value in zip(STATISTICS, values, strict=True):
                layer[key].append(value)
    return list(series.values())
