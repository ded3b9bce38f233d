"""One pure ASGI middleware around every HTTP request: its id, its access log line, its metrics.

Pure ASGI (no BaseHTTPMiddleware): one wrapped `send` and a timer, so it adds microseconds, not a
task, to each request. Access lines are written ACCESS_LINES_PER_WRITE at a time, after the response
that completes them, or ACCESS_LINES_FLUSH_SECONDS after the first of them when requests are few.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bncore.structured_logs import LOG_CONTEXT
from service.observability.access_lines import AccessLines, access_log, log_line
from service.observability.metrics import UNMATCHED_ROUTE, ServiceMetrics
from service.observability.request_id import HEADER, request_id_of

ACCESS_LINES_FLUSH_SECONDS = 0.1  # how late an access line may be written when few requests come
# Written together, after the response of the request that makes them this many: ~0.1 ms here, a
# fraction of a predict, so the request after it hardly waits; a crash loses at most this many.
ACCESS_LINES_PER_WRITE = 16


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
        self.access_lines = AccessLines(max_lines=ACCESS_LINES_PER_WRITE)
        self._flush_due: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope["headers"])
        token = LOG_CONTEXT.set({"request_id": request_id})
        status = 500  # what the client gets when the app raises before it answers

        def send_with_id(message: Message) -> Awaitable[None]:
            """The server's own awaitable: no coroutine frame of this layer around each send."""
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id.encode())]
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route_template(scope), status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                method, path = scope["method"], scope["path"]
                if not self.access_lines.add(request_id, method, path, status, seconds):
                    log_line(method, path, status, seconds)
                elif self._flush_due is None:
                    self._flush_due = asyncio.get_running_loop().call_later(ACCESS_LINES_FLUSH_SECONDS, self._flush)
        # Only once the app returned: uvicorn logs an exception that escapes it after us, in this context,
        # and that traceback should carry the request id. Each request is a task of its own, so nothing leaks.
        LOG_CONTEXT.reset(token)

    def _flush(self) -> None:
        self._flush_due = None
        self.access_lines.flush()
