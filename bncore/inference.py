"""Serving: checking raw prediction inputs, the served form of a model, and an LRU cache of them."""

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from bncore.artifacts import ArtifactStore
from bncore.batching import NO_BATCHING, BatchingPolicy, BatchingStats, BatchObserver, DynamicBatcher
from bncore.drift import DriftMonitor
from bncore.errors import InvalidField, PayloadTooLarge
from bncore.folding import ServingGraph, serving_graph
from bncore.model_store import ModelRecord
from bncore.trained_model import Prediction, TrainedModel


def parse_inputs(raw: Any, input_shape: tuple[int, ...], max_rows: int) -> torch.Tensor:
    """Rows shaped (N, *input_shape) of finite numbers as float32; InvalidField('inputs') otherwise."""
    expected = f"[N, {', '.join(map(str, input_shape))}]"
    if not isinstance(raw, list) or len(raw) == 0:
        raise InvalidField("inputs", f"expected a non-empty list of samples shaped {expected}")
    if len(raw) > max_rows:
        raise PayloadTooLarge("inputs", f"{len(raw)} rows; at most {max_rows} per request")
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidField("inputs", f"expected numbers nested as {expected}, got ragged or non-numeric rows") from None
    except OverflowError:
        raise InvalidField("inputs", "a number too large for a 64-bit float") from None
    if array.shape[1:] != input_shape:
        raise InvalidField("inputs", f"expected shape {expected}, got {list(array.shape)}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        raise InvalidField(f"inputs[{bad[0][0]}]", "NaN or infinite values; every input must be a finite number")
    too_large = np.argwhere(np.abs(array) > np.finfo(np.float32).max)
    if len(too_large):
        raise InvalidField(f"inputs[{too_large[0][0]}]", "values beyond the float32 range the model computes in")
    return torch.from_numpy(array.astype(np.float32))


@dataclass(frozen=True)
class ServedModel:
    """A trained model as the service runs it: its serving graph, watched by a drift monitor, fed by a batcher."""

    trained: TrainedModel  # the training form, as stored
    graph: ServingGraph
    drift: DriftMonitor
    batcher: DynamicBatcher[Prediction]

    @classmethod
    def of(
        cls, trained: TrainedModel, fold_batchnorm: bool, batching: BatchingPolicy = NO_BATCHING,
        on_batch: BatchObserver | None = None,
    ) -> "ServedModel":
        graph = serving_graph(trained, fold_batchnorm)
        drift = DriftMonitor(graph.batchnorms)
        batcher = DynamicBatcher(partial(_forward, graph, drift), _rows, batching, on_batch)
        return cls(trained, graph, drift, batcher)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.trained.input_shape

    def predict(self, raw_inputs: torch.Tensor) -> Prediction:
        """Eval mode with frozen BN statistics, batched with concurrent callers; the drift monitor sees each row once.

        InvalidField when finite inputs still overflow the network: an answer of NaNs is no answer.
        """
        prediction = self.batcher.run(raw_inputs)
        overflowed = (~torch.isfinite(prediction.logits)).any(dim=1).nonzero()
        if len(overflowed):
            raise InvalidField(f"inputs[{int(overflowed[0])}]", "values so large the network overflows float32")
        return prediction

    def serving_stats(self) -> BatchingStats:
        """Requests, rows and forward passes since this process loaded the model."""
        return self.batcher.stats()


@torch.inference_mode()
def _forward(graph: ServingGraph, drift: DriftMonitor, raw_inputs: torch.Tensor) -> Prediction:
    """One forward pass; the BN inputs seen add to the drift monitor's moments."""
    activations: dict[str, torch.Tensor] = {}
    logits = graph.forward(raw_inputs, observe=activations.__setitem__)
    drift.record(len(raw_inputs), activations)
    return Prediction.from_logits(logits)


def _rows(prediction: Prediction, start: int, stop: int) -> Prediction:
    return Prediction(prediction.logits[start:stop], prediction.probabilities[start:stop], prediction.classes[start:stop])


@dataclass(frozen=True)
class CacheStats:
    hits: int  # lookups answered from memory
    misses: int  # lookups that loaded the model from its artifact
    loaded: int  # models held now


class ModelCache:
    """Models rebuilt from their artifacts on first use and kept, least recently used evicted first."""

    def __init__(
        self, artifacts: ArtifactStore, capacity: int, fold_batchnorm: bool, batching: BatchingPolicy = NO_BATCHING,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.capacity = capacity
        self.fold_batchnorm = fold_batchnorm
        self.batching = batching
        self.on_batch = on_batch
        self._models: OrderedDict[str, ServedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def get(self, record: ModelRecord) -> ServedModel:
        """The served model, loaded from its verified artifact on first use."""
        with self._lock:
            if record.id in self._models:
                self._hits += 1
                self._models.move_to_end(record.id)
                return self._models[record.id]
            self._misses += 1
        trained = TrainedModel.from_tensors(record.spec, self.artifacts.load(record.id, record.artifact_sha256))
        loaded = ServedModel.of(trained, self.fold_batchnorm, self.batching, self.on_batch)
        with self._lock:
            # Two first requests may race to load: keep one, so no request feeds an orphaned drift monitor.
            model = self._models.setdefault(record.id, loaded)
            self._models.move_to_end(record.id)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._models))
