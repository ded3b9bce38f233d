"""Limits at the edge: request body size, and job submissions per owner."""

import math
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bncore.errors import PayloadTooLarge, TooManyRequests
from bncore.storage.rate_limits import TokenBuckets
from service.errors import error_response


class SubmissionRateLimit:
    """A token bucket per owner: a burst of `per_minute` submissions, refilled continuously.

    The buckets live where every API process sees them (bncore.storage.rate_limits), so the limit is
    per owner across API_PROCESSES and replicas, not per process.
    """

    def __init__(self, per_minute: int, buckets: TokenBuckets) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.buckets = buckets

    def take(self, owner: str, count: int = 1) -> None:
        """`count` submissions at once, or none: TooManyRequests when fewer are left."""
        taken = self.buckets.take(f"submissions:{owner}", count, self.capacity, self.refill_per_second)
        if taken.allowed:
            return
        wait = math.ceil((count - taken.tokens) / self.refill_per_second)
        if count > self.capacity:
            raise TooManyRequests(
                f"{count} jobs at once are more than the {self.capacity:g} job submissions allowed a minute", wait
            )
        raise TooManyRequests(f"more than {self.capacity:g} job submissions a minute; try again in {wait} s", wait)


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length or while they stream in.

    `larger` gives paths their own limit (dataset uploads take files larger than any JSON body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The awaitable that answers the request: the app's own where there is nothing to count (no
        coroutine frame of this layer in between, whose every resumption the request would pay for)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        max_bytes = self.larger.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > max_bytes:
                return self._refuse(send, max_bytes)
            return self.app(scope, receive, send)  # the server delivers exactly the declared length
        return self._counted(scope, receive, send, max_bytes)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise PayloadTooLarge("body", f"the request body exceeds {max_bytes} bytes")
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        response = error_response(413, PayloadTooLarge.code, f"body: the request body exceeds {max_bytes} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
