"""Typed dependencies: the stores and services a route needs, built once in the app's lifespan.

Async although they never await: FastAPI would run a sync dependency in a thread, a hop per dependency.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from bncore.errors import InvalidField
from bncore.free_text import control_character
from bncore.serving.model_cache import ModelCache
from bncore.serving.shared_drift import SharedDrift
from bncore.settings import Settings
from bncore.storage.job_store import JobStore
from bncore.storage.model_store import ModelStore
from bncore.storage.wiring import Stores
from service.auth import ApiKeyEntry
from service.limits import SubmissionRateLimit
from service.media_types import require_media_type


@dataclass(frozen=True, kw_only=True)
class Services(Stores):
    """The stores (built as the worker builds them, bncore.storage.wiring), and what only the API needs."""

    settings: Settings
    cache: ModelCache
    enqueue: Callable[[str, str], None]
    broker_reachable: Callable[[], bool]
    known_queues: list[str] | None  # every queue some worker consumes, where the service can know it
    api_keys: list[ApiKeyEntry]
    submissions: SubmissionRateLimit
    drift: SharedDrift  # each model's drift moments, merged across API processes


# Bodies are JSON; anything else is refused before it is parsed.
require_json = require_media_type("application/json")


async def printable_path_parameters(request: Request) -> None:
    """Ids in a path hold no control character: no id of ours does, and PostgreSQL cannot even look up a NUL."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (problem := control_character(value)):
            raise InvalidField(name, f"{problem}; no {name} holds one")


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


@dataclass(frozen=True)
class PageRequest:
    """Which page of a newest-first listing: its size, and where the page before ended."""

    limit: PageLimit = 20
    cursor: PageCursor = None


PageQuery = Annotated[PageRequest, Depends()]
DatasetFilter = Annotated[
    str | None, Query(max_length=100, description="only those of this dataset: a built-in's name or an upload's id")
]
IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=255)]
