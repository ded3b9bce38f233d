"""Serving: checking raw prediction inputs and keeping loaded models in an LRU cache."""

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from bncore.artifacts import ArtifactStore
from bncore.errors import InvalidField, PayloadTooLarge
from bncore.model_store import ModelRecord
from bncore.trained_model import TrainedModel


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
    if array.shape[1:] != input_shape:
        raise InvalidField("inputs", f"expected shape {expected}, got {list(array.shape)}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        raise InvalidField(f"inputs[{bad[0][0]}]", "NaN or infinite values; every input must be a finite number")
    return torch.from_numpy(array.astype(np.float32))


class ModelCache:
    """Models rebuilt from their artifacts on first use and kept, least recently used evicted first."""

    def __init__(self, artifacts: ArtifactStore, capacity: int) -> None:
        self.artifacts = artifacts
        self.capacity = capacity
        self._models: OrderedDict[str, TrainedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, record: ModelRecord) -> TrainedModel:
        with self._lock:
            if record.id in self._models:
                self._models.move_to_end(record.id)
                return self._models[record.id]
        model = TrainedModel.from_tensors(record.spec, self.artifacts.load(record.id, record.artifact_sha256))
        with self._lock:
            self._models[record.id] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)
