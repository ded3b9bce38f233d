"""The route that submits work to a collection (jobs, experiments), declared once."""

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from service.deps import require_json
from service.schemas import error_responses

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def submission_route(router: APIRouter, response_model: type[BaseModel]) -> Callable[[Endpoint], Endpoint]:
    """`POST` to the collection: a JSON body, answered 202 once the work is queued, and the refusals a
    submission meets (an Idempotency-Key reused, too large, not JSON, rate limited, queue down)."""
    return router.post(
        "",
        status_code=202,
        response_model=response_model,
        dependencies=[Depends(require_json)],
        responses=error_responses(409, 413, 415, 429, 503),
    )
