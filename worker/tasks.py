"""Celery tasks: thin wrappers that hand a job id to the domain."""

import logging
import time
from collections.abc import Callable
from functools import cache

from celery import Celery, Task

from bncore.jobs.execution import RunLimits, run_job
from bncore.settings import Settings
from bncore.storage.wiring import build_stores
from bncore.structured_logs import log_context

log = logging.getLogger(__name__)

TRAIN_TASK = "worker.tasks.train_job"


def add_tasks(app: Celery, settings: Callable[[], Settings]) -> None:
    """Register the tasks on `app`; the stores are built from `settings` when the first task runs."""
    stores = cache(lambda: build_stores(settings()))

    # shared=False: the task belongs to this app alone, with its own settings and stores.
    @app.task(name=TRAIN_TASK, bind=True, shared=False)
    def train_job(task: Task, job_id: str) -> None:
        started = time.monotonic()
        with log_context(job_id=job_id):
            log.info("job %s: taken by this worker", job_id)
            run_job(job_id, stores(), worker=task.request.hostname or "unknown", limits=RunLimits.from_settings(settings()))
            log.info("job %s: worker done after %.1f s", job_id, time.monotonic() - started)
