"""Typed dependencies: the stores and services a route needs, built once in the app's lifespan.

Async although they never await: FastAPI would run a sync dependency in a thread, a hop per dependency.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Query, Request

from bncore.data.catalog import DatasetCatalog
from bncore.errors import QueueUnavailable, UnsupportedMediaType
from bncore.jobs.experiments import ExperimentStore
from bncore.serving.model_cache import ModelCache
from bncore.settings import Settings
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database
from bncore.storage.job_store import JobStore
from bncore.storage.model_store import ModelStore
from service.auth import ApiKeyEntry
from service.limits import SubmissionRateLimit

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    database: Database
    jobs: JobStore
    models: ModelStore
    artifacts: ArtifactStore
    checkpoints: ArtifactStore
    cache: ModelCache
    enqueue: Callable[[str, str], None]
    broker_reachable: Callable[[], bool]
    known_queues: list[str] | None  # every queue some worker consumes, where the service can know it
    api_keys: list[ApiKeyEntry]
    submissions: SubmissionRateLimit
    experiments: ExperimentStore
    datasets: DatasetCatalog = field(default_factory=DatasetCatalog)


def enqueue_or_fail(services: Services, job_id: str, device: str) -> None:
    """Hand a new job to the queue; if the broker is down, the job fails at once instead of waiting forever."""
    try:
        services.enqueue(job_id, device)
    except Exception as error:
        log.exception("could not enqueue job %s", job_id)
        services.jobs.fail(job_id, QueueUnavailable.code, f"the job queue is unreachable: {error}")
        raise QueueUnavailable("the job queue is unreachable; the job was not started, try again later") from error


def media_type_of(content_type: str) -> str:
    """`application/json` of `Application/JSON; charset=utf-8`."""
    return content_type.split(";")[0].strip().lower()


async def require_json(request: Request) -> None:
    """Bodies are JSON; anything else is refused before it is parsed."""
    media_type = media_type_of(request.headers.get("content-type", ""))
    if media_type != "application/json":
        raise UnsupportedMediaType(f"expected Content-Type: application/json, got '{media_type or 'none'}'")


async def require_json_if_any(request: Request) -> None:
    """For routes whose every body field is optional: no body at all is fine, any other body is JSON."""
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return
    await require_json(request)


async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_settings(request: Request) -> Settings:
    return request.app.state.services.settings


async def get_jobs(request: Request) -> JobStore:
    return request.app.state.services.jobs


async def get_models(request: Request) -> ModelStore:
    return request.app.state.services.models


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
ModelsDep = Annotated[ModelStore, Depends(get_models)]

# The query parameters of every newest-first listing.
PageLimit = Annotated[int, Query(ge=1, le=100, description="at most this many items")]
PageCursor = Annotated[str | None, Query(max_length=200, description="the `next_cursor` of the page before")]
