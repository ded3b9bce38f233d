"""`python -m worker`: one Celery worker process that trains one job at a time.

`python -m worker healthcheck` exits 0 while a worker on this host is alive (for container health checks).
"""

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import celery.apps.worker
from celery.signals import setup_logging

from bncore.settings import get_settings
from bncore.structured_logs import configure_logging
from bncore.training.devices import limit_cpu_threads
from worker.app import PARENT_PID_VARIABLE, create_celery, worker_queues

ALIVE_FILE = Path(tempfile.gettempdir()) / "bnjobs-worker.alive"
ALIVE_EVERY_SECONDS = 10
ALIVE_FOR_SECONDS = 60


def in_background(loop: Callable[[], None], name: str) -> None:
    threading.Thread(target=loop, name=name, daemon=True).start()


def exit_with_parent(parent_pid: int) -> None:
    """An embedded worker ends when the API process that started it is gone, however it died."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(0)


def keep_alive_file() -> None:
    """Touch a file from a thread: it goes on while the solo pool holds the main thread with a job."""
    while True:
        ALIVE_FILE.touch()
        time.sleep(ALIVE_EVERY_SECONDS)


def healthcheck() -> int:
    try:
        age = time.time() - ALIVE_FILE.stat().st_mtime
    except FileNotFoundError:
        print("no worker has started here", file=sys.stderr)
        return 1
    if age > ALIVE_FOR_SECONDS:
        print(f"the worker last showed life {age:.0f} s ago", file=sys.stderr)
        return 1
    return 0


def say_as_json(message: str, stream: object = None) -> None:
    """Celery's notices from its signal handlers ("Warm shutdown"), as JSON lines.

    They bypass logging on purpose: a handler taking the logging lock could deadlock. os.write does not.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    line = {"time": now, "level": "INFO", "logger": "celery.apps.worker", "message": message.strip(), "pid": os.getpid()}
    os.write(2, (json.dumps(line) + "\n").encode())


def main(argv: list[str]) -> None:
    if argv[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    # A receiver of this signal tells Celery that logging is set up: it leaves the root logger and stdout alone.
    setup_logging.connect(lambda **_: None, weak=False)
    if settings.log_format == "json":
        celery.apps.worker.safe_say = say_as_json
    if parent := os.environ.get(PARENT_PID_VARIABLE):
        in_background(lambda: exit_with_parent(int(parent)), "parent-watch")
    in_background(keep_alive_file, "alive-file")
    limit_cpu_threads(settings.torch_threads)
    create_celery(settings).worker_main(
        [
            "--quiet",  # no banner: every line the worker writes is a log line
            "worker",
            "--pool=solo",  # torch trains with its own threads; one job per process
            "--concurrency=1",
            f"--queues={','.join(worker_queues(settings))}",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={settings.log_level}",
            *argv,
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
