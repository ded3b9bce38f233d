"""Fixtures that run the service as users run it.

`BN_TEST_MODE=embedded` (default): `python -m service` with its embedded worker, SQLite and a folder
broker. `BN_TEST_MODE=distributed`: a real redis-server, PostgreSQL when `TEST_POSTGRES_URL` names a
server (else SQLite), `python -m service migrate`, then the API and two separate `python -m worker`
processes, as docker-compose.yml wires them.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import job_request, train
from tests.support.processes import ROOT, free_port, start, stop, wait_ready
from tests.support.servers import RedisServer, fresh_postgres_database

MODE = os.environ.get("BN_TEST_MODE", "embedded")
WORKER_NAMES = ("worker-a", "worker-b")


@dataclass
class RunningService:
    url: str
    data_dir: Path
    log: Path
    mode: str
    redis: RedisServer | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def pytest_report_header() -> str:
    return f"service mode: {MODE}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "distributed" in item.keywords and MODE != "distributed":
            item.add_marker(pytest.mark.skip(reason="needs BN_TEST_MODE=distributed (Redis and separate workers)"))


def _start_distributed(stack: ExitStack, data_dir: Path, env: dict[str, str], log: Path) -> RunningService:
    redis_server = RedisServer(data_dir)
    redis_server.start()
    stack.callback(redis_server.stop)
    env["REDIS_URL"] = redis_server.url
    env["EMBEDDED_WORKERS"] = "0"
    if admin_url := os.environ.get("TEST_POSTGRES_URL"):
        env["DATABASE_URL"] = stack.enter_context(fresh_postgres_database(admin_url))
    subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=ROOT, env={**os.environ, **env}, check=True)
    workers = {}
    for name in WORKER_NAMES:
        worker = start("worker", env, data_dir / f"{name}.log", args=["--hostname", f"{name}@%h"])
        stack.callback(stop, worker)
        workers[name] = worker
    service = RunningService(url="", data_dir=data_dir, log=log, mode=MODE, redis=redis_server, workers=workers)
    return service


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    data_dir = tmp_path_factory.mktemp("data")
    port = free_port()
    log = data_dir / "service.log"
    env = {"DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1", "EMBEDDED_WORKERS": "1"}
    with ExitStack() as stack:
        running = RunningService(url="", data_dir=data_dir, log=log, mode=MODE)
        if MODE == "distributed":
            running = _start_distributed(stack, data_dir, env, log)
        api = start("service", env, log)
        stack.callback(stop, api)
        running.url = f"http://127.0.0.1:{port}"
        wait_ready(running.url, api, log)
        yield running


@pytest.fixture
def client(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def digits_model(service: RunningService) -> dict:
    """A model trained once for the session by the default digits job (3 epochs)."""
    with httpx.Client(base_url=service.url, timeout=60) as c:
        job = train(c, job_request())
        return c.get(f"/v1/models/{job['model_id']}").json()
