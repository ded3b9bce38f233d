"""An LRU cache of served models, rebuilt from their verified artifacts on first use."""

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

from bncore.errors import ModelNotFound
from bncore.serving.batching import NO_BATCHING, BatchingPolicy, BatchObserver
from bncore.serving.served_model import ServedModel
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.model_store import ModelRecord, ModelStore
from bncore.training.trained_model import TrainedModel


@dataclass
class _Cached:
    model: ServedModel
    record: ModelRecord
    checked_at: float  # time.monotonic() when the record was last read from the database
    rereading_since: float | None = None  # when a request set out to read it again, until it has


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
    again, by the first request `recheck_seconds` after the last read; until that read answers, this
    process still serves it, also to the requests that come meanwhile (under load, one read, not one
    a request).
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
        self._loading: dict[str, Future[ServedModel]] = {}  # models some request is loading now
        self._lock = threading.Lock()
        self._hits = self._misses = self._onnx_exports = 0

    def lookup(self, model_id: str, owner: str | None, handing_on: bool = False) -> ServedModel | None:
        """The cached model, if its record was read recently or another request is reading it now; None:
        read the record and call `load` (or `get`).

        With `owner`, ModelNotFound unless the model is theirs, as ModelStore.get answers. A caller that may
        yet hand the request on to another lookup passes `handing_on=True`: it neither counts a hit (it calls
        `count_hit()` once it answers, so that one request is one hit) nor takes on a read that is due (it hands
        the request on to a caller that will).
        """
        with self._lock:
            cached = self._models.get(model_id)
            if cached is None:
                return None
            now = time.monotonic()
            due = now - cached.checked_at > self.recheck_seconds
            if due and (cached.rereading_since is None or now - cached.rereading_since > self.recheck_seconds):
                if not handing_on:
                    cached.rereading_since = now  # this caller reads it; if it never does, another will
                return None
            if not handing_on:
                self._hits += 1
            self._models.move_to_end(model_id)
        if owner is not None and cached.record.owner != owner:
            raise ModelNotFound(model_id)
        return cached.model

    def count_hit(self) -> None:
        with self._lock:
            self._hits += 1

    def load(self, models: ModelStore, model_id: str, owner: str | None) -> ServedModel:
        """The served model of the record read now (`get`), ModelNotFound as `models.get` answers it.

        A model found deleted is forgotten here for good, as `evict` does: a request of this process that read
        its record before another process deleted it cannot bring it back after this one has been refused.
        """
        try:
            record = models.get(model_id, owner)
        except ModelNotFound:
            if owner is None or not models.exists(model_id):
                self.evict(model_id)
            else:  # another owner's model, not deleted: as good as reading its record
                with self._lock:
                    self._checked(model_id)
            raise
        return self.get(record)

    def get(self, record: ModelRecord) -> ServedModel:
        """The served model of a record just read from the database, loaded from its verified artifact on first use.

        Requests that come while it loads wait for that one load (and share its error, if any): a burst of
        first requests loads a model once, not once each.
        """
        with self._lock:
            self._refuse_deleted(record.id)
            if record.id in self._models:
                self._hits += 1
                self._models.move_to_end(record.id)
                return self._checked(record.id).model
            loading = self._loading.get(record.id)
            leads = loading is None
            if leads:
                self._misses += 1
                loading = self._loading[record.id] = Future()
            else:
                self._hits += 1
        if not leads:
            return loading.result()
        try:
            served = self._load(record)
        except BaseException as error:
            loading.set_exception(error)
            raise
        finally:
            with self._lock:
                self._loading.pop(record.id, None)
        loading.set_result(served)
        return served

    def _load(self, record: ModelRecord) -> ServedModel:
        trained = TrainedModel.from_tensors(record.spec, self.artifacts.load(record.id, record.artifact_sha256))
        served = ServedModel.of(trained, self.fold_batchnorm, self.batching, self.on_batch)
        with self._lock:
            # A deletion may have come while the artifact loaded: a deleted model never enters the cache.
            self._refuse_deleted(record.id)
            self._models[record.id] = _Cached(served, record, time.monotonic())
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return served

    def evict(self, model_id: str) -> None:
        """Forget a deleted model for good: a request that read its record before the deletion cannot bring it back."""
        with self._lock:
            self._models.pop(model_id, None)
            self._deleted.add(model_id)

    def loaded(self) -> list[tuple[str, ServedModel]]:
        """The models held now, with their ids."""
        with self._lock:
            return [(model_id, cached.model) for model_id, cached in self._models.items()]

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

    def _checked(self, model_id: str) -> _Cached | None:
        """The cached model, its record just read; the caller holds the lock."""
        cached = self._models.get(model_id)
        if cached is not None:
            cached.checked_at, cached.rereading_since = time.monotonic(), None
        return cached

    def _refuse_deleted(self, model_id: str) -> None:
        if model_id in self._deleted:
            raise ModelNotFound(model_id)
