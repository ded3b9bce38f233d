"""`python -m worker`: one Celery worker process that trains one job at a time."""

import logging
import sys

from bncore.settings import get_settings
from worker.app import celery_app, worker_queues


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
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
