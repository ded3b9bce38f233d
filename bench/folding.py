"""Row 3: the in-process forward pass of a CNN exactly as the service runs it, against unfolded eval.

The baseline is the trained network in eval mode, as stored and as `model.eval()` runs it: BN
layers kept, NCHW, a new tensor per activation. The served pass is the service's own
(ServedModel.forward): BN folded into the convolutions, NHWC (channels_last), activations in place,
the drift monitor's taps summing what each BN layer sees, softmax and argmax. A second comparison,
with its own target, isolates folding: the same NHWC graph without taps, BN folded or kept. Weights
are random and the BN statistics made up: the timing does not depend on their values. Every graph
includes the input standardisation. Torch uses the threads the API process would (INFERENCE_THREADS, else TORCH_THREADS, else 1).
"""

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bench.report import Row, ratio_row
from bncore.bn.folding import serving_graph
from bncore.serving.served_model import ServedModel
from bncore.settings import get_settings
from bncore.specs import JobSpec
from bncore.training.networks import build_network
from bncore.training.trained_model import Standardize, TrainedModel

TARGET_AT_256 = 1.2  # folding alone: at least 1.2× faster at batch 256 on the 3×32×32 CNN (issue 18)
TARGET_SHAPE = (3, 32, 32)
SHAPES = ((1, 8, 8), (3, 32, 32))
BATCHES = (1, 256)
CNN = {"architecture": "cnn", "num_classes": 10}
# Each graph's best run counts: this host's speed flips by a third for tenths of a second at a time
# (bench/host_noise.py), and a ResNet-20 pass at batch 256 is a run of its own.
RUNS = 9


def with_made_up_statistics(model: dict[str, Any], input_shape: tuple[int, ...]) -> TrainedModel:
    """The network of `model` (a job spec's model) in eval mode: seeded random weights, random BN statistics."""
    spec = JobSpec.model_validate({"model": {**model, "input_shape": list(input_shape)}, "dataset": {"name": "digits"}})
    torch.manual_seed(0)
    network = build_network(spec.model, input_shape)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    network.eval()
    return TrainedModel(spec, network, torch.zeros(input_shape), torch.ones(input_shape))


def _seconds_per_pass(network: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        network(inputs)
    return (time.perf_counter() - start) / passes


def measure(seconds_per_case: float, models: list[tuple[str, TrainedModel, float | None]] | None = None) -> list[Row]:
    """Rows per model, named by its prefix, with its target for folding alone at batch 256; by default row 3's CNNs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(get_settings().resolved_inference_threads)
    if models is None:
        models = [
            (
                f"3. CNN {'×'.join(map(str, shape))} forward",
                with_made_up_statistics(CNN, shape),
                TARGET_AT_256 if shape == TARGET_SHAPE else None,
            )
            for shape in SHAPES
        ]
    try:
        return _measure(seconds_per_case, models)
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def _measure(seconds_per_case: float, models: list[tuple[str, TrainedModel, float | None]]) -> list[Row]:
    rows = []
    for name, model, folding_target in models:
        shape = model.input_shape
        served = ServedModel.of(model, fold_batchnorm=True)
        graphs = {
            "served": lambda inputs, served=served: served.forward(inputs).logits,
            "folded NHWC": serving_graph(model, fold=True).network,
            "eval": nn.Sequential(Standardize(model.input_mean, model.input_std), model.network).eval(),
            "unfolded NHWC": serving_graph(model, fold=False).network,
        }
        for batch in BATCHES:
            inputs = torch.randn(batch, *shape)
            rate = _samples_per_second(graphs, inputs, seconds_per_case)
            rows.append(
                ratio_row(
                    f"{name}, batch {batch} (as served: BN folded, drift taps; vs eval)",
                    rate["served"],
                    rate["eval"],
                    "samples/s",
                    None,
                    higher_is_better=True,
                    note=f"{torch.get_num_threads()} torch thread(s), best of {RUNS} alternating runs" if batch == 1 else "",
                )
            )
            if batch == 256:
                rows.append(
                    ratio_row(
                        f"{name}, batch {batch}: folding alone (same NHWC graph without taps, BN folded vs kept)",
                        rate["folded NHWC"],
                        rate["unfolded NHWC"],
                        "samples/s",
                        folding_target,
                        higher_is_better=True,
                    )
                )
    return rows


def _samples_per_second(
    graphs: dict[str, Callable[[torch.Tensor], torch.Tensor]], inputs: torch.Tensor, seconds_per_case: float
) -> dict[str, float]:
    served = graphs["served"](inputs)
    for graph in graphs.values():
        torch.testing.assert_close(graph(inputs), served, rtol=1e-4, atol=1e-4)
    passes = max(1, int(seconds_per_case / 10 / max(_seconds_per_pass(graphs["eval"], inputs, 3), 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(RUNS):  # alternate, so that noise from other work falls on all alike
        for name, graph in graphs.items():
            times[name].append(_seconds_per_pass(graph, inputs, passes))
    return {name: len(inputs) / min(seconds) for name, seconds in times.items()}
