"""Celery worker processes started and watched by the API process (`EMBEDDED_WORKERS`)."""

import logging
import os
import subprocess
import sys
import threading
from types import TracebackType

from worker.app import PARENT_PID_VARIABLE

log = logging.getLogger(__name__)
RESTART_DELAY_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0


class EmbeddedWorkers:
    """Runs `python -m worker` children; one that dies is started again until we stop.

    A job whose worker is stopped mid-way goes on from its checkpoint later (bncore.jobs.recovery),
    so stopping does not wait for running jobs.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="embedded-workers", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, PARENT_PID_VARIABLE: str(os.getpid())}
        process = subprocess.Popen([sys.executable, "-m", "worker"], env=env)
        log.info("started embedded worker pid %d", process.pid)
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(RESTART_DELAY_SECONDS):
            with self._lock:
                for index, process in enumerate(self.processes):
                    if process.poll() is not None and not self._stopping.is_set():
                        log.warning("embedded worker pid %d exited with %s; restarting", process.pid, process.returncode)
                        self.processes[index] = self._spawn()

    def __enter__(self) -> "EmbeddedWorkers":
        self.processes = [self._spawn() for _ in range(self.count)]
        if self.count:
            self._watcher.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        with self._lock:
            self._stopping.set()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
