"""Celery tasks: thin wrappers that hand a job id to the domain."""

from functools import lru_cache

from celery import Task

from bncore.artifacts import ArtifactStore
from bncore.database import Database
from bncore.execution import RunLimits, Stores, run_job
from bncore.job_store import JobStore
from bncore.model_store import ModelStore
from bncore.settings import get_settings
from worker.app import TRAIN_TASK, celery_app


@lru_cache(maxsize=1)
def _stores() -> Stores:
    settings = get_settings()
    database = Database(settings.resolved_database_url)
    return Stores(
        jobs=JobStore(database),
        models=ModelStore(database),
        artifacts=ArtifactStore(settings.resolved_artifacts_dir),
        checkpoints=ArtifactStore(settings.resolved_artifacts_dir / "checkpoints"),
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
    run_job(job_id, _stores(), worker=task.request.hostname or "unknown", limits=limits)
