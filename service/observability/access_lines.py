"""The API's access lines, one a request, buffered and written a batch at a time.

Each is the JSON line logging's formatter writes for `access_log.info("POST /path 200", extra={"fields":
{...}})` in the request's context, byte for byte, built without a LogRecord, a fields dict or a
serializer call a line: what varies from one request of a route to the next (time, request id,
duration) goes into text cached for its method, path and status. On a small machine the API's event
loop limits predict, and a line through logging cost it more than the forward pass; serialized field
by field it still cost ~19 µs of a ~115 µs request there (timed in place, 64 concurrent requests).
Lines are written in pieces of whole lines of at most PIPE_BUF bytes, each one write, so that API
processes sharing a pipe never tear each other's lines. What a crash can lose: the lines since the
last flush.
"""

import logging
import os
import select
import time
from functools import lru_cache

from bncore.structured_logs import json_stream_handler, json_text, log_context, utc_time, whole_line_pieces

access_log = logging.getLogger("service.access")

_Line = tuple[float, str, str, str, int, float]  # created, request id, method, path, status, seconds
_LARGEST_REPR_MS = 1e16  # below it, Python's repr of a float is the JSON pydantic-core writes


class AccessLines:
    """Access lines waiting to be written. The owner calls `flush` soon after a line arrives and at shutdown."""

    def __init__(self, max_lines: int) -> None:
        self.max_lines = max_lines
        self._pending: list[_Line] = []

    def add(self, request_id: str, method: str, path: str, status: int, seconds: float) -> bool:
        """Buffer a request's line (written at once when `max_lines` wait). False, with nothing buffered,
        when logging is set up otherwise (text, other handlers, a level above INFO): then `log_line` it.
        Asked at a batch's first line; `flush` asks again.

        `request_id` must need no JSON escaping, as every id `request_id_of` gives."""
        if not self._pending and json_stream_handler(access_log) is None:
            return False
        self._pending.append((time.time(), request_id, method, path, status, seconds))
        if len(self._pending) >= self.max_lines:
            self.flush()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        handler = json_stream_handler(access_log)
        if handler is None:  # logging was set up otherwise meanwhile: through it, with each line's own time
            if access_log.isEnabledFor(logging.INFO):
                for line in lines:
                    _log_through_logging(*line)
            return
        pid = os.getpid()
        texts = [_json_line(line, pid, handler.terminator) for line in lines]
        with handler.lock:  # type: ignore[union-attr]
            for piece in whole_line_pieces(texts, select.PIPE_BUF):
                handler.stream.write(piece)
                handler.flush()


def log_line(method: str, path: str, status: int, seconds: float) -> None:
    """The access line through logging, as any other line: in the request's context (its id), at the current time."""
    access_log.info(_message(method, path, status), extra={"fields": _fields(method, path, status, seconds)})


def _message(method: str, path: str, status: int) -> str:
    return f"{method} {path} {status}"


def _fields(method: str, path: str, status: int, seconds: float) -> dict[str, object]:
    return {"method": method, "path": path, "status": status, "duration_ms": _milliseconds(seconds)}


def _milliseconds(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _log_through_logging(created: float, request_id: str, method: str, path: str, status: int, seconds: float) -> None:
    record = access_log.makeRecord(
        access_log.name, logging.INFO, "", 0, _message(method, path, status), (), None,
        extra={"fields": _fields(method, path, status, seconds)},
    )  # fmt: skip
    record.created, record.msecs = created, created % 1 * 1000
    with log_context(request_id=request_id):
        access_log.handle(record)


def _json_line(line: _Line, pid: int, terminator: str) -> str:
    created, request_id, method, path, status, seconds = line
    before_pid, before_duration = _route_text(method, path, status)
    milliseconds = _milliseconds(seconds)
    duration = repr(milliseconds) if milliseconds < _LARGEST_REPR_MS else json_text(milliseconds)
    time_text = utc_time(created)
    return f'{{"time":"{time_text}",{before_pid}{pid},"request_id":"{request_id}",{before_duration}{duration}}}{terminator}'


@lru_cache(maxsize=1024)
def _route_text(method: str, path: str, status: int) -> tuple[str, str]:
    """The line's text between the time and the pid, and between the request id and the duration."""
    message = json_text(_message(method, path, status))
    before_pid = f'"level":"INFO","logger":{json_text(access_log.name)},"message":{message},"pid":'
    before_duration = f'"method":{json_text(method)},"path":{json_text(path)},"status":{status},"duration_ms":'
    return before_pid, before_duration
