"""Request ids: the caller's `X-Request-ID` when it is a short token of safe characters, else a new one."""

import random
import re

from bncore.structured_logs import LOG_CONTEXT

HEADER = b"x-request-id"
# Letters, digits and `._:-`, at most 128: fits in a log line and a header, and cannot forge either.
_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The id the caller sent, if it is safe to echo and log; a fresh random one otherwise."""
    for name, value in headers:
        if name == HEADER:
            if _SAFE.fullmatch(value):
                return value.decode()
            break
    return f"{random.getrandbits(128):032x}"  # unique, not secret: no system call per request


def current_request_id() -> str | None:
    """The id of the request being served in this context, None outside of one."""
    return LOG_CONTEXT.get().get("request_id")
