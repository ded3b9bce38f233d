"""Predict without FastAPI's routing, dependencies and validation, when none of them has anything to do.

On a small machine the event loop limits predict: routing, solving dependencies and validating the
body cost several times the forward pass of a small network. This ASGI middleware answers the common
request itself: a caller allowed to predict, a model this process holds in its cache, a JSON body of
declared length that is exactly `{"inputs": [...]}` with at most INLINE_PARSE_ROWS valid rows. It sends
the bytes the route would. Any other request goes on to the route, with its body, so the route stays
the one place that explains what is wrong with a request.
"""

import functools
from collections.abc import Awaitable
from typing import Annotated, Any

import torch
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict

from bncore.errors import DomainError
from bncore.serving.inputs import nested_numbers, numbers_as_inputs
from bncore.serving.served_model import ServedModel
from bncore.settings import Settings
from service.auth import INFER, principal_of
from service.deps import Services
from service.errors import domain_error_response
from service.media_types import media_type_of
from service.observability.metrics import PREDICT_ROUTE, ServiceMetrics
from service.observability.middleware import AnsweredFor
from service.routes.models import INLINE_PARSE_ROWS
from service.schemas import PredictOut

_PATH = compile_path(PREDICT_ROUTE)[0]  # the route template, matched as Starlette matches it
_ANSWERED_FOR = AnsweredFor(PREDICT_ROUTE)  # the label of its request metrics


class PredictFastPath:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.answered = metrics.predict_fast_path

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The awaitable that answers the request, the app's own for any other: no frame of this layer
        in between, whose every resumption the request would pay for."""
        match = _PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        services: Services | None = scope["app"].state.services if match else None
        model = _servable(services, scope, match["model_id"]) if match and services else None
        if model is None:
            return self.app(scope, receive, send)
        return self._predict(scope, receive, send, match["model_id"], model, services)

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, model_id: str, model: ServedModel, services: Services
    ) -> None:
        try:
            messages = await _read_request(receive)
        except DomainError as error:  # the body outgrew the size limit as it came in
            await domain_error_response(error)(scope, receive, send)
            return
        complete = messages[-1]["type"] == "http.request"
        inputs = _inputs(b"".join(m.get("body", b"") for m in messages), model, services.settings) if complete else None
        if inputs is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = _ANSWERED_FOR
        self.answered.inc()
        services.cache.count_hit()
        try:
            answer = PredictOut.json_of(model_id, await model.predict_async(inputs))
        except DomainError as error:  # inputs that overflow the network: found only by running it
            await domain_error_response(error)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(answer)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})


_READ_HEADERS = (b"content-type", b"content-length", b"authorization")


def _headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each header the fast path reads, as Starlette reads it."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in _READ_HEADERS and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _servable(services: Services, scope: Scope, model_id: str) -> ServedModel | None:
    """The cached model, if the caller may predict with it and sends JSON of declared length."""
    headers = _headers(scope)
    if media_type_of(headers.get(b"content-type", "")) != "application/json" or not headers.get(b"content-length"):
        return None
    if scope.get("query_string"):
        return None  # the route refuses query parameters it does not take
    try:
        caller = principal_of(headers.get(b"authorization", ""), services.api_keys)
        # A request handed on to the route is looked up again there: counted as a hit, or reading the record, there.
        return services.cache.lookup(model_id, caller.owner_filter, handing_on=True) if caller.holds_any(INFER) else None
    except DomainError:
        return None


async def _read_request(receive: Receive) -> list[Message]:
    """The messages of the whole body, or up to the client's disconnect."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
        messages.append(await receive())
    return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


def _inputs(body: bytes, model: ServedModel, settings: Settings) -> torch.Tensor | None:
    """The inputs, if the body is exactly `{"inputs": [...]}` of 1 to INLINE_PARSE_ROWS valid rows: nested
    as the model's input shape, or (an image model) as flat rows."""
    shape = model.input_shape
    for depth in (1 + len(shape), 2) if len(shape) > 1 else (2,):
        try:
            rows = _request_body(depth).validate_json(body)["inputs"]
        except ValueError:  # pydantic's ValidationError, for the JSON as for what it holds
            continue
        try:
            return numbers_as_inputs(rows, shape, within_float32=True) if len(rows) <= settings.max_predict_rows else None
        except DomainError:
            return None
    return None


@functools.cache
def _request_body(depth: int) -> TypeAdapter[Any]:
    """`{"inputs": [...]}` and no other key, 1 to INLINE_PARSE_ROWS rows of numbers within float32's range
    nested `depth` deep, parsed and checked in one pass over the bytes (a third less than parsing, then
    checking the values; the range checked here spares numpy's ~2 µs check of a one-row request after it).

    Strict as the route's own check of the values (`parse_inputs`): a value out of range goes to the
    route, which names it. Where pydantic's JSON parser and Python's json differ, this one refuses (a
    BOM, a lone surrogate, nesting over 200 deep), and the route parses the body itself.
    """
    numbers = nested_numbers(depth - 1, within_float32=True)
    rows = Annotated[list[numbers], Field(min_length=1, max_length=INLINE_PARSE_ROWS)]
    return TypeAdapter(with_config(ConfigDict(extra="forbid"))(TypedDict("PredictBody", {"inputs": rows})))
