"""One pure ASGI middleware around every HTTP request: its id, its access log line, its metrics.

Pure ASGI (no BaseHTTPMiddleware): one wrapped `send` and a timer, nothing buffered, so it adds
microseconds, not a task, to each request.
"""

import logging
import time
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bncore.structured_logs import LOG_CONTEXT, write_info_line
from service.observability.metrics import UNMATCHED_ROUTE, ServiceMetrics
from service.observability.request_id import HEADER, request_id_of

access_log = logging.getLogger("service.access")


class AnsweredFor(NamedTuple):
    """In the scope's `route`, where a middleware answers a request for the route with this template."""

    path: str


def route_template(scope: Scope) -> str:
    """The route that served the request, as declared (`/v1/jobs/{job_id}`), set by the router in the scope."""
    if (route := scope.get("route")) is not None:
        return route.path
    if "endpoint" in scope:  # a mounted app (the static files): its mount path
        return f"{scope.get('root_path', '')}/*"
    return UNMATCHED_ROUTE


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        token = LOG_CONTEXT.set({"request_id": request_id})
        status = 500  # what the client gets when the app raises before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route_template(scope), status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                method, path = scope["method"], scope["path"]
                message = f"{method} {path} {status}"
                fields = {"method": method, "path": path, "status": status, "duration_ms": round(seconds * 1000, 3)}
                if not write_info_line(access_log, message, fields):
                    access_log.info(message, extra={"fields": fields})
        # Only once the app returned: uvicorn logs an exception that escapes it after us, in this context,
        # and that traceback should carry the request id. Each request is a task of its own, so nothing leaks.
        LOG_CONTEXT.reset(token)
