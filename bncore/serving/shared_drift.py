"""Drift across API processes: each publishes its monitors' moments; a `/drift` read merges them.

A process publishes a model's moments when they changed, at most every `interval` seconds, from a
thread of its own: nothing is written on the predict path. A read merges this process's live
moments with what the others last published, so it lags them by at most `interval`.
"""

import logging
import threading
import uuid

from bncore.serving.drift import DriftReport, DriftThresholds
from bncore.serving.model_cache import ModelCache
from bncore.serving.served_model import ServedModel
from bncore.storage.drift_store import DriftMomentsStore

log = logging.getLogger(__name__)


class SharedDrift:
    def __init__(self, store: DriftMomentsStore, cache: ModelCache, interval: float) -> None:
        self.store = store
        self.cache = cache
        self.interval = interval
        self.process_id = uuid.uuid4().hex  # not the pid: pids are reused, across hosts too
        self._published: dict[str, tuple[int, int]] = {}  # model id → (id of its monitor, samples published)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-publisher", daemon=True)

    def report(self, model_id: str, model: ServedModel, thresholds: DriftThresholds) -> DriftReport:
        return model.drift.report(thresholds, self.store.others(model_id, self.process_id))

    def publish(self) -> None:
        for model_id, model in self.cache.loaded():
            key = (id(model.drift), model.drift.samples)
            if self._published.get(model_id) != key:
                self.store.publish(model_id, self.process_id, model.drift.published())
                self._published[model_id] = key

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.store.forget_process(self.process_id)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.publish()
            except Exception:  # the database may be away for a while; the next round tries again
                log.warning("drift moments not published this round", exc_info=True)
