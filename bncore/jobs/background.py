"""What runs beside a job on its worker: the heartbeat, and the recorder that writes epochs' metrics."""

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bncore.storage.job_store import LeaseLost
from bncore.training.epoch_metrics import EpochMetrics

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(beat: Callable[[], bool], every_seconds: float) -> Iterator[threading.Event]:
    """Call `beat` every interval from a thread while the block runs (training holds the main thread).

    The event yielded is set once `beat` answers False: the job is no longer this worker's.
    """
    stop, lost = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.wait(every_seconds):
            try:
                if not beat():
                    lost.set()
                    return
            except Exception:
                log.exception("heartbeat failed; trying again")

    thread = threading.Thread(target=loop, name="job-heartbeat", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


class EpochRecorder:
    """Writes epochs' metrics from a thread of its own, so training does not wait for the database.

    A write goes at most every `every_seconds`, with all the epochs that ended since the last one: a
    write holds the GIL for milliseconds, which short epochs would otherwise pay for one by one. A
    write that finds the lease lost sets `lost`, which stops training at its next step as the
    heartbeat's would.
    """

    def __init__(self, write: Callable[[list[EpochMetrics]], None], lost: threading.Event, every_seconds: float) -> None:
        self._write = write
        self._lost = lost
        self._every_seconds = every_seconds
        self._pending: queue.SimpleQueue[EpochMetrics | threading.Event | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="job-metrics", daemon=True)

    def __enter__(self) -> "EpochRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pending.put(None)
        self._thread.join()

    def record(self, metrics: EpochMetrics) -> None:
        self._pending.put(metrics)

    def flush(self) -> None:
        """Wait until every epoch recorded so far is written; raise what a write raised."""
        done = threading.Event()
        self._pending.put(done)
        done.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        held: list[EpochMetrics] = []  # ended less than every_seconds after the last write
        next_write = -math.inf
        while True:
            try:
                item = self._pending.get(timeout=max(next_write - time.monotonic(), 0.0) if held else None)
            except queue.Empty:
                self._write_now(held)
                held, next_write = [], time.monotonic() + self._every_seconds
                continue
            if isinstance(item, EpochMetrics):
                held.append(item)
                if time.monotonic() < next_write:
                    continue
            if held:
                self._write_now(held)
                held, next_write = [], time.monotonic() + self._every_seconds
            if isinstance(item, threading.Event):
                item.set()
            elif item is None:
                return

    def _write_now(self, epochs: list[EpochMetrics]) -> None:
        if self._error is not None:
            return
        try:
            self._write(epochs)
        except BaseException as error:
            self._error = error
            if isinstance(error, LeaseLost):
                self._lost.set()
            else:
                log.exception("could not record epochs' metrics")
