"""Serving: checking raw prediction inputs, the served form of a model, and an LRU cache of them."""

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from bncore.bn.folding import ServingGraph, serving_graph
from bncore.bn.moments import BatchMoments
from bncore.errors import InvalidField, ModelNotFound, PayloadTooLarge
from bncore.serving.batching import NO_BATCHING, BatchingPolicy, BatchingStats, BatchObserver, DynamicBatcher
from bncore.serving.drift import DriftMonitor
from bncore.serving.onnx_export import OnnxExport
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.model_store import ModelRecord
from bncore.training.trained_model import Prediction, TrainedModel

FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_inputs(raw: Any, input_shape: tuple[int, ...], max_rows: int) -> torch.Tensor:
    """Rows shaped (N, *input_shape) of finite numbers as float32; InvalidField('inputs') otherwise."""
    if not isinstance(raw, list) or len(raw) == 0:
        raise InvalidField("inputs", f"expected a non-empty list of samples shaped {_shape(input_shape)}")
    if len(raw) > max_rows:
        raise PayloadTooLarge("inputs", f"{len(raw)} rows; at most {max_rows} per request")
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (ValueError, TypeError):
        raise InvalidField(
            "inputs", f"expected numbers nested as {_shape(input_shape)}, got ragged or non-numeric rows"
        ) from None
    except OverflowError:
        raise InvalidField("inputs", "a number too large for a 64-bit float") from None
    if array.shape[1:] != input_shape:
        array = _flat_rows_reshaped(array, input_shape)
    if not np.abs(array).max() <= FLOAT32_MAX:  # also true of NaN
        _refuse_out_of_range(array)
    return torch.from_numpy(array.astype(np.float32))


def _shape(input_shape: tuple[int, ...]) -> str:
    shaped = f"[N, {', '.join(map(str, input_shape))}]"
    return shaped if len(input_shape) == 1 else f"{shaped} or flat [N, {math.prod(input_shape)}]"


def _flat_rows_reshaped(array: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """An image model also takes each sample as one flat row of its C·H·W values, in C, H, W order."""
    if array.ndim == 2 and array.shape[1] == math.prod(input_shape):
        return array.reshape(len(array), *input_shape)
    raise InvalidField("inputs", f"expected shape {_shape(input_shape)}, got {list(array.shape)}")


def _refuse_out_of_range(array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))
        raise InvalidField(f"inputs[{bad[0][0]}]", "NaN or infinite values; every input must be a finite number")
    too_large = np.argwhere(np.abs(array) > FLOAT32_MAX)
    raise InvalidField(f"inputs[{too_large[0][0]}]", "values beyond the float32 range the model computes in")


@dataclass(frozen=True)
class ServedModel:
    """A trained model as the service runs it: its serving graph, watched by a drift monitor, fed by a batcher."""

    trained: TrainedModel  # the training form, as stored
    graph: ServingGraph
    drift: DriftMonitor
    batcher: DynamicBatcher["_Answer"]
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
        batcher = DynamicBatcher(partial(_forward, graph, drift), _rows, batching, on_batch)
        return cls(trained, graph, drift, batcher, OnnxExport(trained))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.trained.input_shape

    def predict(self, raw_inputs: torch.Tensor) -> Prediction:
        """Eval mode with frozen BN statistics, batched with concurrent callers; the drift monitor sees each row once.

        InvalidField when finite inputs still overflow the network: an answer of NaNs is no answer.
        """
        return _checked(self.batcher.run(raw_inputs))

    async def predict_async(self, raw_inputs: torch.Tensor) -> Prediction:
        """As `predict`, awaited: no thread waits for the batch, and the forward pass runs off the event loop."""
        return _checked(await self.batcher.run_async(raw_inputs))

    def serving_stats(self) -> BatchingStats:
        """Requests, rows and forward passes since this process loaded the model."""
        return self.batcher.stats()


@dataclass(frozen=True)
class _Answer:
    prediction: Prediction
    overflowed: list[int]  # rows whose logits are not all finite, usually none


def _checked(answer: _Answer) -> Prediction:
    if answer.overflowed:
        raise InvalidField(f"inputs[{answer.overflowed[0]}]", "values so large the network overflows float32")
    return answer.prediction


@torch.inference_mode()
def _forward(graph: ServingGraph, drift: DriftMonitor, raw_inputs: torch.Tensor) -> _Answer:
    """One forward pass; what the BN layers saw adds to the drift monitor's moments."""
    seen: dict[str, BatchMoments] = {}
    logits = graph.forward(raw_inputs, observe=lambda name, values: seen.__setitem__(name, BatchMoments.of(values)))
    drift.record(len(raw_inputs), seen)
    finite = np.isfinite(logits.numpy())
    overflowed = [] if finite.all() else np.flatnonzero(~finite.all(axis=1)).tolist()
    return _Answer(Prediction.from_logits(logits), overflowed)


def _rows(answer: _Answer, start: int, stop: int) -> _Answer:
    prediction = answer.prediction
    return _Answer(
        Prediction(prediction.logits[start:stop], prediction.probabilities[start:stop], prediction.classes[start:stop]),
        [row - start for row in answer.overflowed if start <= row < stop],
    )


@dataclass
class _Cached:
    model: ServedModel
    record: ModelRecord
    checked_at: float  # time.monotonic() when the record was last read from the database


@dataclass(frozen=True)
class CacheStats:
    hits: int  # lookups answered from memory
    misses: int  # lookups that loaded the model from its artifact
    loaded: int  # models held now
    onnx_exports: int  # ONNX files exported; a cached model's is exported once


class ModelCache:
    """Models rebuilt from their artifacts on first use and kept, least recently used evicted first.

    Each keeps its model record, so a request for a cached model needs no database read: records
    never change, only deletion ends them. A model deleted through this process is evicted and never
    served again here. One deleted through another API process is noticed when its record is read
    again, at most `recheck_seconds` after the last read; until then this process still serves it.
    """

    def __init__(
        self,
        artifacts: ArtifactStore,
        capacity: int,
        fold_batchnorm: bool,
        batching: BatchingPolicy = NO_BATCHING,
        on_batch: BatchObserver | None = None,
        recheck_seconds: float = 5.0,
    ) -> None:
        self.artifacts = artifacts
        self.capacity = capacity
        self.fold_batchnorm = fold_batchnorm
        self.batching = batching
        self.on_batch = on_batch
        self.recheck_seconds = recheck_seconds
        self._models: OrderedDict[str, _Cached] = OrderedDict()
        self._deleted: set[str] = set()  # model ids are never reused
        self._lock = threading.Lock()
        self._hits = self._misses = self._onnx_exports = 0

    def lookup(self, model_id: str, owner: str | None) -> ServedModel | None:
        """The cached model, if its record was read recently; None: read the record and call `get`.

        With `owner`, ModelNotFound unless the model is theirs, as ModelStore.get answers.
        """
        with self._lock:
            cached = self._models.get(model_id)
            if cached is None or time.monotonic() - cached.checked_at > self.recheck_seconds:
                return None
            self._hits += 1
            self._models.move_to_end(model_id)
        if owner is not None and cached.record.owner != owner:
            raise ModelNotFound(model_id)
        return cached.model

    def get(self, record: ModelRecord) -> ServedModel:
        """The served model of a record just read from the database, loaded from its verified artifact on first use."""
        with self._lock:
            self._refuse_deleted(record.id)
            if record.id in self._models:
                self._hits += 1
                cached = self._models[record.id]
                cached.checked_at = time.monotonic()
                self._models.move_to_end(record.id)
                return cached.model
            self._misses += 1
        trained = TrainedModel.from_tensors(record.spec, self.artifacts.load(record.id, record.artifact_sha256))
        served = ServedModel.of(trained, self.fold_batchnorm, self.batching, self.on_batch)
        loaded = _Cached(served, record, time.monotonic())
        with self._lock:
            # A deletion may have come while the artifact loaded: a deleted model never enters the cache.
            self._refuse_deleted(record.id)
            # Two first requests may race to load: keep one, so no request feeds an orphaned drift monitor.
            cached = self._models.setdefault(record.id, loaded)
            self._models.move_to_end(record.id)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return cached.model

    def evict(self, model_id: str) -> None:
        """Forget a deleted model for good: a request that read its record before the deletion cannot bring it back."""
        with self._lock:
            self._models.pop(model_id, None)
            self._deleted.add(model_id)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._models), self._onnx_exports)

    def onnx(self, record: ModelRecord) -> bytes:
        """The model's ONNX export (BN folded), made on the first request and kept while the model is cached."""
        payload, exported = self.get(record).onnx.get()
        if exported:
            with self._lock:
                self._onnx_exports += 1
        return payload

    def _refuse_deleted(self, model_id: str) -> None:
        if model_id in self._deleted:
            raise ModelNotFound(model_id)
