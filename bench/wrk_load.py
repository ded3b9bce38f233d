"""Load from `wrk` (a native load generator): the client's own cost stays out of the server's numbers.

Without wrk (`sudo apt-get install wrk`), the Python client of bench/http_load.py measures instead,
and the rows say so: it spends CPU on the same 2 cores.
"""

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import http_load

INSTALL = "wrk is not installed (sudo apt-get install wrk): measured with the Python client instead"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Load:
    p50_ms: float
    p99_ms: float
    requests_per_second: float
    tool: str


def available() -> bool:
    return shutil.which("wrk") is not None


def _script(target: tuple[str, int, bytes], folder: Path) -> Path:
    body = target[2].split(b"\r\n\r\n", 1)[1].decode()
    script = folder / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n' + f"wrk.body = [==[{body}]==]\n")
    return script


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run(url: str, target: tuple[str, int, bytes], connections: int, seconds: float) -> Load:
    """p50 and p99 latency (ms) and requests/s with `connections` connections each sending back to back."""
    if not available():
        if connections == 1:
            latency = http_load.summarise(http_load.sequential_latencies(target, max(50, int(seconds * 500))))
            return Load(latency.p50_ms, latency.p99_ms, 1000 / latency.p50_ms, "python")
        return Load(float("nan"), float("nan"), http_load.throughput(target, connections, seconds), "python")
    with tempfile.TemporaryDirectory() as tmp:
        command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
        command += ["-s", str(_script(target, Path(tmp))), url]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw errors:\n{output}")
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (p50 and p99 and rate):
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return Load(_milliseconds(p50.group(1)), _milliseconds(p99.group(1)), float(rate.group(1)), "wrk")
