"""The media type of a request's body, read one way everywhere (routes, fast path, error handlers)."""

from collections.abc import Awaitable, Callable

from fastapi import Request

from bncore.errors import UnsupportedMediaType


def media_type_of(content_type: str) -> str:
    """`application/json` of `Application/JSON; charset=utf-8`."""
    return content_type.split(";")[0].strip().lower()


def require_media_type(expected: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a body of any other media type before it is parsed."""

    async def require(request: Request) -> None:
        media_type = media_type_of(request.headers.get("content-type", ""))
        if media_type != expected:
            raise UnsupportedMediaType(f"expected Content-Type: {expected}, got '{media_type or 'none'}'")

    return require
