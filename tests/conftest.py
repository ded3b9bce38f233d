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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import job_request, train
from tests.support.processes import ROOT, embedded_worker_pids, free_port, start, stop, wait_ready
from tests.support.servers import RedisServer, fresh_postgres_database

MODE = os.environ.get("BN_TEST_MODE", "embedded")
WORKER_NAMES = ("worker-a", "worker-b") if MODE == "distributed" else ()
# Quick heartbeats, so that a lost worker is noticed within seconds rather than half a minute.
FAST_RECOVERY = {"HEARTBEAT_SECONDS": "0.5", "JOB_STALE_SECONDS": "3", "CANCEL_POLL_SECONDS": "0.2"}
# A checkpoint after every epoch, so that a job killed at epoch k resumes from k (test_job_survives_faults).
EVERY_EPOCH_CHECKPOINTS = {"CHECKPOINT_SECONDS": "0"}
# A cap on epochs × samples low enough for a test to pass it with a built-in dataset.
SAMPLE_EPOCH_CAP = {"MAX_SAMPLE_EPOCHS": "1500000"}
# A model read once is served on the predict fast path for the whole session, not rechecked every 5 s.
MODELS_KEPT = {"MODEL_RECHECK_SECONDS": "3600"}
# A job spanning several workers gives up gathering them after this long (slow process starts included).
GANG_JOIN_TIMEOUT = {"GANG_JOIN_TIMEOUT_SECONDS": "15"}
# Two workers and the API share this machine's cores: one torch thread each keeps them from thrashing.
ONE_THREAD_EACH = {"TORCH_THREADS": "1"} if MODE == "distributed" else {}
# The session's service takes every test's jobs, more than 60 a minute on a fast machine; the limit
# itself is tested on a service of its own (test_api_keys.py).
NO_SUBMISSION_LIMIT = {"JOB_SUBMISSIONS_PER_MINUTE": "100000"}


@dataclass
class RunningService:
    """The API (and in distributed mode Redis and the workers), with ways to break and mend them."""

    data_dir: Path
    env: dict[str, str]
    url: str = ""
    redis: RedisServer | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.data_dir / "service.log"

    @property
    def worker_count(self) -> int:
        return len(self.workers) or 1

    def start_api(self) -> None:
        self.api = start("service", self.env, self.log)
        self.url = f"http://127.0.0.1:{self.env['PORT']}"
        wait_ready(self.url, self.api, self.log)

    def restart_api(self) -> None:
        assert self.api is not None
        stop(self.api)
        self.start_api()

    def start_worker(self, name: str) -> None:
        self.workers[name] = start("worker", self.env, self.data_dir / f"{name}.log", ["--hostname", f"{name}@%h"])

    def stop_worker(self, name: str) -> None:
        stop(self.workers.pop(name))

    def worker_pid(self, worker: str) -> int:
        """The pid of the worker process a job names (`name@host`)."""
        name = worker.split("@")[0]
        if name in self.workers:
            return self.workers[name].pid
        assert self.api is not None
        children = embedded_worker_pids(self.api.pid)
        assert len(children) == 1, children
        return children[0]

    def stop(self) -> None:
        for process in [self.api, *self.workers.values()]:
            if process is not None:
                stop(process)


@contextmanager
def own_backends(folder: Path) -> Iterator[dict[str, str]]:
    """The environment a service a test starts itself needs to run on this mode's backends.

    Distributed: a redis-server of its own and a fresh PostgreSQL database (when `TEST_POSTGRES_URL` names a
    server), as `REDIS_URL` and `DATABASE_URL`; the service migrates it at start. Embedded: nothing to add.
    """
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if test not in _ON_THIS_MODES_BACKENDS:
        raise RuntimeError(
            f"{test} starts a service on the mode's backends: mark it own_backends or the distributed run skips it"
        )
    if MODE != "distributed":
        yield {}
        return
    redis = RedisServer(folder)
    redis.start()
    try:
        env = {"REDIS_URL": redis.url}
        if admin_url := os.environ.get("TEST_POSTGRES_URL"):
            with fresh_postgres_database(admin_url) as database_url:
                yield env | {"DATABASE_URL": database_url}
        else:
            yield env
    finally:
        redis.stop()


def pytest_report_header() -> str:
    return f"service mode: {MODE}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "distributed" in item.keywords and MODE != "distributed":
            item.add_marker(pytest.mark.skip(reason="needs BN_TEST_MODE=distributed (Redis and separate workers)"))
        if "embedded_only" in item.keywords and MODE != "embedded":
            item.add_marker(pytest.mark.skip(reason="needs the embedded run's service (one worker, in the API process)"))
        if _on_this_modes_backends(item):
            _ON_THIS_MODES_BACKENDS.add(item.nodeid)
        elif MODE == "distributed":
            item.add_marker(pytest.mark.skip(reason="reaches no backend of this mode: the embedded run covers it"))


_ON_THIS_MODES_BACKENDS: set[str] = set()


def _on_this_modes_backends(item: pytest.Item) -> bool:
    """Whether the test runs on the mode's backends: through the session's service (or a module's own fixture of that
    name), or marked as starting services of its own on them. Any other test runs alike in both modes."""
    marked = any(name in item.keywords for name in ("distributed", "own_backends"))
    return marked or "service" in getattr(item, "fixturenames", ())


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    data_dir = tmp_path_factory.mktemp("data")
    env = {
        "DATA_DIR": str(data_dir),
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        **FAST_RECOVERY,
        **EVERY_EPOCH_CHECKPOINTS,
        **SAMPLE_EPOCH_CAP,
        **MODELS_KEPT,
        **ONE_THREAD_EACH,
        **GANG_JOIN_TIMEOUT,
        **NO_SUBMISSION_LIMIT,
    }
    running = RunningService(data_dir=data_dir, env=env)
    with ExitStack() as stack:
        stack.callback(running.stop)
        if MODE == "distributed":
            running.redis = RedisServer(data_dir)
            running.redis.start()
            stack.callback(running.redis.stop)
            env |= {"REDIS_URL": running.redis.url, "EMBEDDED_WORKERS": "0"}
            if admin_url := os.environ.get("TEST_POSTGRES_URL"):
                env["DATABASE_URL"] = stack.enter_context(fresh_postgres_database(admin_url))
            subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=ROOT, env={**os.environ, **env}, check=True)
            for name in WORKER_NAMES:
                running.start_worker(name)
        else:
            env["EMBEDDED_WORKERS"] = "1"
        running.start_api()
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
