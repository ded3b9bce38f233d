"""An operator reads the logs: one JSON object per line, each request's line findable by its X-Request-ID."""

import io
import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bncore.structured_logs import LOG_CONTEXT, JsonFormatter, TextFormatter, write_info_line
from tests.conftest import RunningService

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def log_files(service: RunningService) -> list[Path]:
    """The API's log, and in distributed mode each worker's (embedded workers write into the API's)."""
    return [service.log, *(service.data_dir / f"{name}.log" for name in service.workers)]


def entries(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
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


def test_an_access_line_written_past_logging_is_the_line_logging_writes() -> None:
    """The API writes its access lines without a LogRecord (they cost a predict more than its forward pass):
    the same JSON object, key for key; with the text format they go through logging as before."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root, access = logging.getLogger(), logging.getLogger("service.access")
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers, fields = [handler], {"method": "POST", "path": "/v1/x", "status": 200, "duration_ms": 0.25}
    root.setLevel(logging.INFO)
    token = LOG_CONTEXT.set({"request_id": "r-1"})
    try:
        assert write_info_line(access, "POST /v1/x 200", fields)
        access.info("POST /v1/x 200", extra={"fields": fields})
        handler.setFormatter(TextFormatter())
        assert not write_info_line(access, "POST /v1/x 200", fields)
        root.setLevel(logging.WARNING)
        handler.setFormatter(JsonFormatter())
        assert not write_info_line(access, "POST /v1/x 200", fields)
    finally:
        LOG_CONTEXT.reset(token)
        root.handlers = saved_handlers
        root.setLevel(saved_level)
    written, logged = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(written) == list(logged) and written.pop("time")[:16] == logged.pop("time")[:16]
    assert written == logged
