"""A trained model as the service runs it: serving graph, drift monitor, dynamic batcher, ONNX export."""

from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import torch

from bncore.bn.folding import ServingGraph, serving_graph
from bncore.bn.moments import BatchMoments, feature_rows
from bncore.bn.tracing import MODULE_CALLS
from bncore.errors import InvalidField
from bncore.serving.batching import NO_BATCHING, BatchingPolicy, BatchingStats, BatchObserver, DynamicBatcher
from bncore.serving.drift import DriftMonitor, Seen
from bncore.serving.onnx_export import OnnxExport
from bncore.training.trained_model import Prediction, PredictionLists, TrainedModel

# A pass whose BN layers each see at most this many values keeps a copy of them, summed by the drift monitor
# together with other small passes' (one sum for many one-row requests); a larger pass's moments are summed at once.
DEFERRED_MOMENTS_VALUES = 4096


@dataclass(frozen=True)
class ServedModel:
    """A trained model as the service runs it: its serving graph, watched by a drift monitor, fed by a batcher."""

    trained: TrainedModel  # the training form, as stored
    graph: ServingGraph
    drift: DriftMonitor
    batcher: DynamicBatcher["_Share"]
    onnx: OnnxExport

    @classmethod
    def of(
        cls,
        trained: TrainedModel,
        fold_batchnorm: bool,
        batching: BatchingPolicy = NO_BATCHING,
        on_batch: BatchObserver | None = None,
    ) -> "ServedModel":
        graph = serving_graph(trained, fold_batchnorm)
        drift = DriftMonitor(graph.batchnorms)
        # While a model loads, its tracing excludes every forward pass: none may wait for it on the event loop.
        batcher = DynamicBatcher(partial(_whole, graph, drift), _rows, batching, on_batch, inline_allowed=_not_tracing)
        return cls(trained, graph, drift, batcher, OnnxExport(trained))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.trained.input_shape

    def predict(self, raw_inputs: torch.Tensor) -> Prediction:
        """Eval mode with frozen BN statistics, batched with concurrent callers; the drift monitor sees each row once.

        InvalidField when finite inputs still overflow the network: an answer of NaNs is no answer.
        """
        return _checked(self.batcher.run(raw_inputs)).prediction()

    async def predict_async(self, raw_inputs: torch.Tensor) -> PredictionLists:
        """As `predict`, awaited, as the lists a JSON answer holds: no thread waits for the batch, and the
        forward pass runs off the event loop."""
        return _checked(await self.batcher.run_async(raw_inputs)).lists()

    def forward(self, inputs: torch.Tensor) -> Prediction:
        """One forward pass exactly as a batch of the batcher runs it (drift taps included), for the benchmark."""
        return _forward(self.graph, self.drift, inputs).prediction

    def serving_stats(self) -> BatchingStats:
        """Requests, rows and forward passes since this process loaded the model."""
        return self.batcher.stats()


def _not_tracing() -> bool:
    return not MODULE_CALLS.exclusive_wanted()


@dataclass(frozen=True)
class _Answer:
    """One forward pass's answer, for all the requests of its batch."""

    prediction: Prediction
    overflowed: list[int]  # rows whose logits are not all finite, usually none

    @cached_property
    def lists(self) -> PredictionLists:
        """Converted once for the whole batch: a request's rows are then slices of lists, not of tensors."""
        return self.prediction.tolist()


@dataclass(frozen=True)
class _Share:
    """A request's rows of a batch's answer."""

    answer: _Answer
    start: int
    stop: int

    def overflowed(self) -> list[int]:
        return [row - self.start for row in self.answer.overflowed if self.start <= row < self.stop]

    def prediction(self) -> Prediction:
        whole = self.answer.prediction
        rows = slice(self.start, self.stop)
        return Prediction(whole.logits[rows], whole.probabilities[rows], whole.classes[rows])

    def lists(self) -> PredictionLists:
        return self.answer.lists.rows(self.start, self.stop)


def _checked(share: _Share) -> _Share:
    if overflowed := share.overflowed():
        raise InvalidField(f"inputs[{overflowed[0]}]", "values so large the network overflows float32")
    return share


def _whole(graph: ServingGraph, drift: DriftMonitor, raw_inputs: torch.Tensor) -> _Share:
    return _Share(_forward(graph, drift, raw_inputs), 0, len(raw_inputs))


@torch.inference_mode()
def _forward(graph: ServingGraph, drift: DriftMonitor, raw_inputs: torch.Tensor) -> _Answer:
    """One forward pass; what the BN layers saw adds to the drift monitor's moments.

    Rows that overflow anywhere (a BN input or the logits) are answered as overflowed and left out of the
    moments: one infinite sum would make every later drift report of the model infinite.
    """
    logits, seen = _observed_forward(graph, raw_inputs)
    if _finite(logits, seen):
        drift.record(len(raw_inputs), seen)
        return _Answer(Prediction.from_logits(logits), [])
    # Rare: each row alone (inference never depends on the rest of the batch); the finite ones are recorded.
    overflowed = []
    for row in range(len(raw_inputs)):
        row_logits, row_seen = _observed_forward(graph, raw_inputs[row : row + 1])
        if _finite(row_logits, row_seen):
            drift.record(1, row_seen)
        else:
            overflowed.append(row)
    return _Answer(Prediction.from_logits(logits), overflowed)


def _observed_forward(graph: ServingGraph, raw_inputs: torch.Tensor) -> tuple[torch.Tensor, dict[str, Seen]]:
    seen: dict[str, Seen] = {}
    logits = graph.forward(raw_inputs, observe=lambda name, values: seen.__setitem__(name, _seen(values)))
    return logits, seen


def _seen(values: torch.Tensor) -> Seen:
    rows = feature_rows(values)
    return rows.numpy().copy() if rows.numel() <= DEFERRED_MOMENTS_VALUES else BatchMoments.of(rows)


def _finite(logits: torch.Tensor, seen: dict[str, Seen]) -> bool:
    """Whether the logits and every value a BN layer saw are finite (a sum of squares is, only if they all are)."""
    arrays = [moments.squares if isinstance(moments, BatchMoments) else moments for moments in seen.values()]
    return bool(np.isfinite(np.concatenate([logits.numpy().ravel(), *(array.ravel() for array in arrays)])).all())


def _rows(batch: _Share, start: int, stop: int) -> _Share:
    return _Share(batch.answer, start, stop)
