"""Start the real processes a deployment runs, with their output kept for failing tests."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(module: str, env: dict[str, str], log_path: Path, args: list[str] = ()) -> subprocess.Popen[bytes]:
    """`python -m module args` from the repository root with `env` on top of ours."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready in {timeout}s:\n{log_path.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def own_service(data_dir: Path, env: dict[str, str], api_keys: list[dict] | None = None) -> Iterator[str]:
    """A `python -m service` of a test's own, in `data_dir`, with `api_keys` as its API_KEYS_FILE: its URL."""
    env = {"DATA_DIR": str(data_dir), "PORT": str(free_port()), "HOST": "127.0.0.1", **env}
    if api_keys is not None:
        keys_file = data_dir / "keys.json"
        keys_file.write_text(json.dumps(api_keys))
        env["API_KEYS_FILE"] = str(keys_file)
    log = data_dir / "service.log"
    process = start("service", env, log)
    try:
        url = f"http://127.0.0.1:{env['PORT']}"
        wait_ready(url, process, log)
        yield url
    finally:
        stop(process)


def written_lines(log_path: Path) -> list[str]:
    """The log's whole lines: a line being written may be read in part (Linux copies a write a page at a time)."""
    text = log_path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def pids_of_requests(log_path: Path, request_ids: set[str], timeout: float = 10) -> dict[str, int]:
    """The pid of the API process that answered each request, from its access log line (by `X-Request-ID`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for line in written_lines(log_path):
            if line.startswith("{") and '"service.access"' in line:
                entry = json.loads(line)
                if entry.get("request_id") in request_ids:
                    found[entry["request_id"]] = entry["pid"]
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def embedded_worker_pids(api_pid: int) -> list[int]:
    """The `python -m worker` children of an API process."""
    children = Path(f"/proc/{api_pid}/task/{api_pid}/children").read_text().split()
    return [int(pid) for pid in children if b"-m\x00worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def process_alive(pid: int) -> bool:
    """Running or sleeping: an exited orphan may stay a zombie where the container's init reaps nothing."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Whether the process has ended within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not process_alive(pid)
