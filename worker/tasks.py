"""Celery tasks: thin wrappers that hand a job id to the domain."""

from functools import lru_cache

from celery import Task

from bncore.artifacts import ArtifactStore
from bncore.database import Database
from bncore.execution import run_job
from bncore.job_store import JobStore
from bncore.model_store import ModelStore
from bncore.settings import get_settings
from worker.app import TRAIN_TASK, celery_app


@lru_cache(maxsize=1)
def _stores() -> tuple[JobStore, ModelStore, ArtifactStore]:
    settings = get_settings()
    database = Database(settings.resolved_database_url)
    return JobStore(database), ModelStore(database), ArtifactStore(settings.resolved_artifacts_dir)


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(task: Task, job_id: str) -> None:
    jobs, models, artifacts = _stores()
    worker = task.request.hostname or "unknown"
    run_job(job_id, jobs, models, artifacts, worker, cancel_poll_seconds=get_settings().cancel_poll_seconds)
