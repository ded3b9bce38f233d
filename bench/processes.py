"""The processes a benchmark runs against: `python -m service` as deployed, the minimal endpoint, redis-server."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def python_module(
    module: str, env: dict[str, str], log: Path, ready_url: str, args: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m module` from the repository root with `env` on top of ours, stopped on exit."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(ready_url, process, log)
        yield process
    finally:
        stop(process)


@contextmanager
def service(data_dir: Path, **settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The API with its embedded worker, as `make run` starts it, on a free loopback port."""
    port = free_port()
    env = {"DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(port), **settings}
    url = f"http://127.0.0.1:{port}"
    with python_module("service", env, data_dir / "service.log", f"{url}/readyz") as process:
        yield url, process


@contextmanager
def redis_server(folder: Path) -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port, or None when none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
        stdout=(folder / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer in 10s")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
