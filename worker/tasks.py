"""Celery tasks: thin wrappers that hand a job id to the domain."""

import logging
import time
from collections.abc import Callable
from functools import cache

from celery import Celery, Task

from bncore.jobs.dispatch import Dispatch, JoinRequest
from bncore.jobs.execution import RunLimits, run_job
from bncore.jobs.gangs import join_job
from bncore.settings import Settings, from_settings
from bncore.storage.wiring import build_stores
from bncore.structured_logs import log_context

log = logging.getLogger(__name__)

TRAIN_TASK = "worker.tasks.train_job"
JOIN_TASK = "worker.tasks.join_job"
PASS_ON_SECONDS = 1.0  # before a join task this worker cannot take (it is in the gang already) is offered again


def dispatch(app: Celery) -> Dispatch:
    """Sending, for a running job: itself queued again, or a join task for a place in its gang."""

    def send_join(request: JoinRequest, queue: str, countdown: float) -> None:
        args = [request.job_id, request.attempt, request.member, queue]
        app.send_task(JOIN_TASK, args=args, queue=queue, countdown=countdown)

    return Dispatch(send_job=lambda job_id, queue: app.send_task(TRAIN_TASK, args=[job_id], queue=queue), send_join=send_join)


def add_tasks(app: Celery, settings: Callable[[], Settings]) -> None:
    """Register the tasks on `app`; the stores are built from `settings` when the first task runs."""
    stores = cache(lambda: build_stores(settings()))

    # shared=False: the task belongs to this app alone, with its own settings and stores.
    @app.task(name=TRAIN_TASK, bind=True, shared=False)
    def train_job(task: Task, job_id: str) -> None:
        started = time.monotonic()
        with log_context(job_id=job_id):
            log.info("job %s: taken by this worker", job_id)
            limits = from_settings(RunLimits, settings())
            run_job(job_id, stores(), worker=task.request.hostname or "unknown", limits=limits, dispatch=dispatch(app))
            log.info("job %s: worker done after %.1f s", job_id, time.monotonic() - started)

    @app.task(name=JOIN_TASK, bind=True, shared=False)
    def join_gang(task: Task, job_id: str, attempt: int, member: int, queue: str) -> None:
        request = JoinRequest(job_id, attempt, member)
        with log_context(job_id=job_id):
            log.info("job %s: this worker joins its gang as member %d", job_id, member)
            join_job(
                request,
                stores(),
                worker=task.request.hostname or "unknown",
                limits=from_settings(RunLimits, settings()),
                pass_on=lambda: dispatch(app).send_join(request, queue, PASS_ON_SECONDS),
            )
