"""Log lines as one JSON object each (or plain text), carrying the context of the work at hand.

The context (`request_id` in the API, `job_id` in a worker) lives in a ContextVar, so it follows a
request into the thread its route runs in, and it costs nothing to lines that are never emitted.
"""

import logging
import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

from pydantic_core import to_json

LogFormat = Literal["json", "text"]

LOG_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Every line logged inside the block, in this thread or task, carries `fields`."""
    token = LOG_CONTEXT.set({**LOG_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        LOG_CONTEXT.reset(token)


def _extra_fields(record: logging.LogRecord) -> Mapping[str, object]:
    """Fields a caller passed as `log.info(..., extra={"fields": {...}})`."""
    return getattr(record, "fields", None) or {}


def _entry(
    created: float,
    level: str,
    logger: str,
    message: str,
    pid: int | None,
    context: Mapping[str, str],
    fields: Mapping[str, object],
) -> dict:
    entry = {"time": utc_time(created), "level": level, "logger": logger, "message": message, "pid": pid}
    return {**entry, **context, **fields}


@lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def utc_time(created: float) -> str:
    """`datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds")`, at less than half the cost."""
    second = math.floor(created)
    microseconds = round((created - second) * 1e6)  # rounded as datetime rounds
    if microseconds == 1_000_000:
        second, microseconds = second + 1, 0
    return f"{_utc_second(second)}.{microseconds // 1000:03d}+00:00"


def json_text(value: object) -> str:
    """Compact JSON, anything it cannot serialize as its str(), by pydantic-core's serializer (pydantic's own
    dependency): a fifth of json.dumps's cost. ASCII, as json.dumps writes it: a line's length in
    characters is then its length in bytes, which `whole_line_pieces` counts."""
    return to_json(value, ensure_ascii=True, fallback=str).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            record.process,
            LOG_CONTEXT.get(),
            _extra_fields(record),
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json_text(entry)


def json_stream_handler(logger: logging.Logger) -> logging.StreamHandler | None:
    """The root's one plain JSON stream handler, when it alone writes `logger`'s INFO lines."""
    handlers = logging.getLogger().handlers
    if len(handlers) != 1 or logger.handlers or not logger.isEnabledFor(logging.INFO):
        return None
    [handler] = handlers
    if type(handler) is not logging.StreamHandler or type(handler.formatter) is not JsonFormatter or handler.filters:
        return None
    return handler


def whole_line_pieces(lines: list[str], limit: int) -> Iterator[str]:
    """The lines joined into pieces of at most `limit` characters (a longer line is a piece of its own)."""
    piece: list[str] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield "".join(piece)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the context appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = {**LOG_CONTEXT.get(), **_extra_fields(record)}
        if not context:
            return line
        suffix = " ".join(f"{key}={value}" for key, value in context.items())
        first, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{first} [{suffix}]{newline}{rest}"


def configure_logging(log_format: LogFormat, level: str) -> None:
    """One handler on the root logger, on stderr; every library's logger (uvicorn, Celery) ends up there."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn goes through the formatter too, not raw to stderr
    _send_library_loggers_to_root()


def _send_library_loggers_to_root() -> None:
    """Libraries that print on their own (torch gives `torch` and `torch.onnx` stderr handlers and stops
    propagation when it is imported) log through the root handler instead, as one JSON line each."""
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers and not logger.propagate:
            for old in logger.handlers[:]:
                logger.removeHandler(old)
            logger.propagate = True
