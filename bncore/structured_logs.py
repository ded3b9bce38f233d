"""Log lines as one JSON object each (or plain text), carrying the context of the work at hand.

The context (`request_id` in the API, `job_id` in a worker) lives in a ContextVar, so it follows a
request into the thread its route runs in, and it costs nothing to lines that are never emitted.
"""

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Literal

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


def _entry(created: float, level: str, logger: str, message: str, pid: int | None, fields: Mapping[str, object]) -> dict:
    return {
        "time": datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": logger,
        "message": message,
        "pid": pid,
        **LOG_CONTEXT.get(),
        **fields,
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname, record.name, record.getMessage(), record.process, _extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def write_info_line(logger: logging.Logger, message: str, fields: Mapping[str, object]) -> bool:
    """An INFO line of `logger`, written as the root's one JSON handler writes it (same object, one write and
    flush), without a LogRecord: for a line on every request, where logging's record, caller lookup and
    formatter cost several times the line itself. False, with nothing written, when logging is set up
    otherwise (text, other handlers, a level above INFO): then log it as usual.
    """
    handlers = logging.getLogger().handlers
    if len(handlers) != 1 or logger.handlers or not logger.isEnabledFor(logging.INFO):
        return False
    [handler] = handlers
    if type(handler) is not logging.StreamHandler or type(handler.formatter) is not JsonFormatter or handler.filters:
        return False
    line = json.dumps(_entry(time.time(), "INFO", logger.name, message, os.getpid(), fields), default=str)
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line + handler.terminator)
        handler.flush()
    return True


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
