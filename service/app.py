"""The FastAPI application: stores built once in the lifespan, routers, one error handler."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bncore.artifacts import ArtifactStore
from bncore.database import Database
from bncore.inference import ModelCache
from bncore.job_store import JobStore
from bncore.migrations import upgrade_database
from bncore.model_store import ModelStore
from bncore.settings import Settings, get_settings
from service.deps import Services
from service.errors import install_error_handlers
from service.routes import datasets, health, jobs, models
from worker.app import broker_reachable, enqueue_training, worker_queues

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    artifacts = ArtifactStore(settings.resolved_artifacts_dir)
    return Services(
        settings=settings, database=database, jobs=JobStore(database), models=ModelStore(database),
        artifacts=artifacts, cache=ModelCache(artifacts, settings.model_cache_size),
        enqueue=enqueue_training, broker_reachable=broker_reachable,
        # With the folder broker only this host's embedded workers exist; with Redis workers come and go.
        known_queues=worker_queues(settings) if settings.uses_filesystem_broker else None,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = build_services(settings)
        yield
        app.state.services.database.engine.dispose()

    app = FastAPI(
        title="BatchNorm job service",
        version="0.1.0",
        description="Train Batch Normalization networks as jobs; serve them with frozen test-time statistics.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (jobs, models, datasets, health):
        app.include_router(module.router)
    return app
