"""Row 3: the in-process forward pass of a CNN with BN folded into the convolutions, against unfolded eval.

Weights are random and the BN statistics made up: the timing does not depend on their values.
Both graphs include the input standardisation; neither feeds the drift monitor. Torch uses the
threads the API process would (INFERENCE_THREADS, else TORCH_THREADS, else 1).
"""

import statistics
import time

import torch

from bncore.folding import serving_graph
from bncore.networks import build_network
from bncore.settings import get_settings
from bncore.specs import JobSpec
from bncore.trained_model import TrainedModel
from bench.report import Row, ratio_row

TARGET_AT_256 = 1.2  # folded at least 1.2× faster at batch 256
SHAPES = ((1, 8, 8), (3, 32, 32))
BATCHES = (1, 256)


def cnn(input_shape: tuple[int, ...]) -> TrainedModel:
    spec = JobSpec.model_validate({
        "model": {"architecture": "cnn", "num_classes": 10, "input_shape": list(input_shape)},
        "dataset": {"name": "digits"},
    })
    torch.manual_seed(0)
    network = build_network(spec.model, input_shape)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    network.eval()
    return TrainedModel(spec, network, torch.zeros(input_shape), torch.ones(input_shape))


def _seconds_per_pass(network: torch.nn.Module, inputs: torch.Tensor, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        network(inputs)
    return (time.perf_counter() - start) / passes


def measure(seconds_per_case: float) -> list[Row]:
    threads = torch.get_num_threads()
    torch.set_num_threads(get_settings().resolved_inference_threads)
    try:
        return _measure(seconds_per_case)
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def _measure(seconds_per_case: float) -> list[Row]:
    rows = []
    for shape in SHAPES:
        model = cnn(shape)
        folded, unfolded = serving_graph(model, fold=True).network, serving_graph(model, fold=False).network
        for batch in BATCHES:
            inputs = torch.randn(batch, *shape)
            torch.testing.assert_close(folded(inputs), unfolded(inputs), rtol=1e-4, atol=1e-4)
            one = _seconds_per_pass(unfolded, inputs, 3)
            passes = max(1, int(seconds_per_case / 10 / max(one, 1e-6)))
            times: dict[str, list[float]] = {"folded": [], "unfolded": []}
            for _ in range(5):  # alternate, so that noise from other work falls on both
                times["folded"].append(_seconds_per_pass(folded, inputs, passes))
                times["unfolded"].append(_seconds_per_pass(unfolded, inputs, passes))
            folded_rate = batch / statistics.median(times["folded"])
            unfolded_rate = batch / statistics.median(times["unfolded"])
            rows.append(ratio_row(
                f"3. CNN {'×'.join(map(str, shape))} forward, batch {batch} (folded vs unfolded BN)",
                folded_rate, unfolded_rate, "samples/s", TARGET_AT_256 if batch == 256 else None, higher_is_better=True,
                note=f"{torch.get_num_threads()} torch thread(s), median of 5 alternating runs" if batch == 1 else "",
            ))
    return rows
