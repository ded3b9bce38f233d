"""Fixtures that run the service as users run it: `python -m service` with its embedded worker."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, start, stop, wait_ready


@dataclass
class RunningService:
    url: str
    data_dir: Path
    log: Path


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The API with one embedded Celery worker process, on SQLite and a folder broker."""
    data_dir = tmp_path_factory.mktemp("data")
    port = free_port()
    log = data_dir / "service.log"
    env = {"DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1", "EMBEDDED_WORKERS": "1"}
    process = start("service", env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield RunningService(url=url, data_dir=data_dir, log=log)
    finally:
        stop(process)


@pytest.fixture
def client(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def digits_model(service: RunningService) -> dict:
    """A model trained once for the session by the default digits job (3 epochs)."""
    from tests.support.jobs import job_request, train

    with httpx.Client(base_url=service.url, timeout=60) as c:
        job = train(c, job_request())
        return c.get(f"/v1/models/{job['model_id']}").json()
