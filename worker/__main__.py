"""`python -m worker`: one Celery worker process that trains one job at a time."""

import logging
import os
import sys
import threading
import time

from bncore.devices import limit_cpu_threads
from bncore.settings import get_settings
from worker.app import PARENT_PID_VARIABLE, celery_app, worker_queues


def exit_with_parent(parent_pid: int) -> None:
    """An embedded worker ends when the API process that started it is gone, however it died."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if parent := os.environ.get(PARENT_PID_VARIABLE):
        exit_with_parent(int(parent))
    settings = get_settings()
    limit_cpu_threads(settings.torch_threads)
    celery_app.worker_main([
        "worker",
        "--pool=solo",  # torch trains with its own threads; one job per process
        "--concurrency=1",
        f"--queues={','.join(worker_queues(settings))}",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
        *argv,
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
