"""An operator reads the logs: one JSON object per line, each request's line findable by its X-Request-ID."""

import io
import json
import logging
import math
import os
import random
import re
import select
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from bncore.structured_logs import LOG_CONTEXT, JsonFormatter, TextFormatter, _entry, json_text, utc_time
from service.observability.access_lines import AccessLines, log_line
from tests.conftest import RunningService
from tests.support.processes import written_lines

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def log_files(service: RunningService) -> list[Path]:
    """The API's log, and in distributed mode each worker's (embedded workers write into the API's)."""
    return [service.log, *(service.data_dir / f"{name}.log" for name in service.workers)]


def entries(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in written_lines(path) if line.strip()]
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path.name} line {number} is not JSON: {line!r}") from None
    return parsed


def access_line(service: RunningService, request_id: str, timeout: float = 10) -> dict[str, Any]:
    """The access line of the request with this id; it is written just after the response is sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in entries(service.log):
            if entry.get("request_id") == request_id and entry["logger"] == "service.access":
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no access line with request_id {request_id} in {service.log}")


def test_every_log_line_of_the_api_and_workers_is_a_json_object(service: RunningService, digits_model: dict) -> None:
    lines = [entry for path in log_files(service) for entry in entries(path)]
    assert lines
    for entry in lines:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    loggers = {entry["logger"] for entry in lines}
    assert {"uvicorn.error", "service.access"} <= loggers  # uvicorn's own lines go through the same formatter
    assert "uvicorn.access" not in loggers  # replaced by service.access


def test_a_workers_lines_carry_the_job_it_runs(service: RunningService, digits_model: dict) -> None:
    job_id = digits_model["job_id"]
    lines = [entry for path in log_files(service) for entry in entries(path)]
    of_job = [entry for entry in lines if entry.get("job_id") == job_id]
    assert any("taken by this worker" in entry["message"] for entry in of_job), of_job
    assert all("request_id" not in entry for entry in of_job)


def test_a_request_id_sent_comes_back_and_names_the_access_line(service: RunningService, client: httpx.Client) -> None:
    request_id = f"test-{uuid.uuid4()}"
    response = client.get("/v1/jobs", params={"limit": 1}, headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    line = access_line(service, request_id)
    assert line["method"] == "GET" and line["path"] == "/v1/jobs" and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


def test_a_request_without_an_id_gets_one(service: RunningService, client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(request_id)
    assert access_line(service, request_id)["path"] == "/healthz"
    assert client.get("/healthz").headers["x-request-id"] != request_id


def test_an_unsafe_request_id_is_replaced_not_echoed(service: RunningService, client: httpx.Client) -> None:
    for unsafe in ("x" * 129, "two words", '"quoted"', "a/b"):
        response = client.get("/healthz", headers={"X-Request-ID": unsafe})
        assert response.status_code == 200
        assert GENERATED_ID.fullmatch(response.headers["x-request-id"]), unsafe


def test_an_error_response_names_its_request_id(service: RunningService, client: httpx.Client) -> None:
    response = client.get("/v1/jobs/job_missing", headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.json()["error"]["request_id"] == "trace-404"
    assert access_line(service, "trace-404")["status"] == 404


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_workers_resource_tracker_writes_its_plain_text_warnings_nowhere_the_logs_go(service: RunningService) -> None:
    """A killed worker's tracker warns about the semaphores of its data-parallel jobs it cleans up: not into the logs."""
    if service.workers:
        workers = [process.pid for process in service.workers.values()]
    else:
        assert service.api is not None
        workers = [pid for pid in children(service.api.pid) if " -m worker" in command_line(pid)]
    assert workers
    for worker in workers:
        tracker = tracker_of(worker)
        assert Path(f"/proc/{tracker}/fd/2").resolve() == Path("/dev/null")


def tracker_of(worker: int, timeout: float = 60) -> int:
    """The worker's resource tracker, once the worker has started it (it may still be importing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trackers = [pid for pid in children(worker) if "resource_tracker" in command_line(pid)]
        if trackers:
            return trackers[0]
        time.sleep(0.1)
    raise AssertionError(f"worker {worker} started no resource tracker in {timeout}s")


class _Writes(io.StringIO):
    """A stream that remembers each write, as a pipe would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@contextmanager
def root_handler(formatter: logging.Formatter, level: int = logging.INFO) -> Iterator[_Writes]:
    stream = _Writes()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def test_buffered_access_lines_are_the_lines_logging_writes_each_with_its_own_request() -> None:
    """The API buffers its access lines (written one by one they cost a predict more than its forward pass):
    once written, each is the object logging's formatter writes, key for key, with its request's id and
    time, though the batch is written outside any request."""
    lines = AccessLines(max_lines=100)
    with root_handler(JsonFormatter()) as stream:
        for request_id in ("r-1", "r-2"):
            token = LOG_CONTEXT.set({"request_id": request_id})
            assert lines.add(request_id, "POST", "/v1/x", 200, 0.00025)
            log_line("POST", "/v1/x", 200, 0.00025)
            LOG_CONTEXT.reset(token)
        assert lines.pending == 2 and len(stream.writes) == 2  # logging's two; the buffered ones wait
        lines.flush()
    logged = [json.loads(line) for line in stream.writes[:2]]
    written = [json.loads(line) for line in "".join(stream.writes[2:]).splitlines()]
    assert [line["request_id"] for line in written] == ["r-1", "r-2"]
    assert written[0]["message"] == "POST /v1/x 200" and written[0]["duration_ms"] == 0.25
    for mine, theirs in zip(written, logged, strict=True):
        assert list(mine) == list(theirs) and abs(_epoch(mine.pop("time")) - _epoch(theirs.pop("time"))) < 1
        assert mine == theirs


@pytest.mark.parametrize(
    ("method", "path", "status", "seconds"),
    [
        ("POST", "/v1/models/model_1/predict", 200, 0.000437),
        ("GET", '/v1/caf\u00e9/"quoted"\\ and\ttab', 404, 0.0),
        ("PATCH", "/v1/jobs/j", 500, 12.3456789),
        ("DELETE", "/", 204, 3e13),  # a duration in milliseconds too large for repr's plain digits
    ],
)
def test_an_access_line_is_byte_for_byte_the_json_logging_writes(method: str, path: str, status: int, seconds: float) -> None:
    """Access lines are written from text cached per route, not through the serializer: the text must be
    what serializing the entry of logging's record writes, whatever the path holds."""
    lines = AccessLines(max_lines=100)
    with root_handler(JsonFormatter()) as stream:
        for request_id in ("r-1", "0f" * 16):  # the second line takes the route's text from the cache
            assert lines.add(request_id, method, path, status, seconds)
        created = [line[0] for line in lines._pending]
        lines.flush()

    fields = {"method": method, "path": path, "status": status, "duration_ms": round(seconds * 1000, 3)}
    expected = [
        json_text(_entry(moment, "INFO", "service.access", f"{method} {path} {status}", os.getpid(), {"request_id": rid}, fields))
        for moment, rid in zip(created, ("r-1", "0f" * 16), strict=True)
    ]
    assert stream.getvalue().splitlines() == expected
    assert json.loads(expected[0])["path"] == path


def test_access_lines_go_through_logging_when_it_is_set_up_otherwise() -> None:
    lines = AccessLines(max_lines=100)
    with root_handler(TextFormatter()) as stream:
        assert not lines.add("r-0", "POST", "/v1/x", 200, 0.001)  # the caller logs it as usual
    with root_handler(JsonFormatter(), level=logging.WARNING):
        assert not lines.add("r-0", "POST", "/v1/x", 200, 0.001)
    with root_handler(JsonFormatter()):
        assert lines.add("r-3", "POST", "/v1/x", 200, 0.001)
    with root_handler(TextFormatter()) as stream:  # logging set up again before the line was written
        token = LOG_CONTEXT.set({"request_id": "another request's"})
        lines.flush()
        LOG_CONTEXT.reset(token)
    [line] = stream.getvalue().splitlines()
    assert "POST /v1/x 200" in line and "request_id=r-3" in line and "status=200" in line
    with root_handler(JsonFormatter()):
        assert lines.add("r-4", "POST", "/v1/x", 200, 0.001)
    with root_handler(JsonFormatter(), level=logging.WARNING) as stream:  # INFO turned off before it was written
        lines.flush()
    assert stream.writes == []


def test_a_batch_of_lines_is_written_in_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    """Several API processes share one stderr: a write of at most PIPE_BUF bytes to a pipe is never torn."""
    lines = AccessLines(max_lines=1000)
    with root_handler(JsonFormatter()) as stream:
        for number in range(200):
            lines.add(f"r-{number}", "POST", f"/v1/models/{'m' * (number % 50)}/predict", 200, 0.001)
        lines.flush()
    assert len(stream.writes) > 1
    assert all(len(piece.encode()) <= select.PIPE_BUF and piece.endswith("\n") for piece in stream.writes)
    assert len(stream.getvalue().splitlines()) == 200


def test_a_line_is_ascii_json_whatever_its_message_and_fields_hold() -> None:
    """Each piece of a batch must fit PIPE_BUF bytes, counted in characters: only ASCII makes those equal."""
    fields = {"file": Path("/data/naïve.csv"), "found": {1, 2}, "ratio": float("inf"), "owner": object()}
    with root_handler(JsonFormatter()) as stream:
        logging.getLogger("bncore.story").info("déjà vu ✓", extra={"fields": fields})
    [line] = stream.writes
    assert line.isascii() and "\\u00e9" in line
    entry = json.loads(line)
    assert entry["message"] == "déjà vu ✓" and entry["file"] == "/data/naïve.csv"
    assert sorted(entry["found"]) == [1, 2] and entry["ratio"] == math.inf and entry["owner"].startswith("<object")


def test_log_times_are_what_datetime_writes() -> None:
    rng = random.Random(7)
    moments = [rng.uniform(0, 4e9) for _ in range(20_000)]
    moments += [math.floor(moment) + fraction for moment in moments[:500] for fraction in (0.0, 0.0005, 0.9995, 0.9999996)]
    for moment in moments:
        assert utc_time(moment) == datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
