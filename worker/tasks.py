"""Celery tasks: thin wrappers that hand a job id to the domain."""

import logging
import time
from functools import lru_cache

from celery import Task

from bncore.data.catalog import DatasetCatalog
from bncore.jobs.execution import RunLimits, Stores, run_job
from bncore.settings import get_settings
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database
from bncore.storage.dataset_store import DatasetStore
from bncore.storage.job_store import JobStore
from bncore.storage.model_store import ModelStore
from bncore.structured_logs import log_context
from worker.app import TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _stores() -> Stores:
    settings = get_settings()
    database = Database(settings.resolved_database_url)
    return Stores(
        jobs=JobStore(database),
        models=ModelStore(database),
        artifacts=ArtifactStore(settings.resolved_artifacts_dir),
        checkpoints=ArtifactStore(settings.resolved_checkpoints_dir),
        datasets=DatasetCatalog(DatasetStore.in_artifacts(database, settings.resolved_artifacts_dir)),
    )


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(task: Task, job_id: str) -> None:
    settings = get_settings()
    limits = RunLimits(
        time_limit_seconds=settings.job_time_limit_seconds,
        heartbeat_seconds=settings.heartbeat_seconds,
        control_poll_seconds=settings.cancel_poll_seconds,
        checkpoint_seconds=settings.checkpoint_seconds,
    )
    started = time.monotonic()
    with log_context(job_id=job_id):
        log.info("job %s: taken by this worker", job_id)
        run_job(job_id, _stores(), worker=task.request.hostname or "unknown", limits=limits)
        log.info("job %s: worker done after %.1f s", job_id, time.monotonic() - started)
