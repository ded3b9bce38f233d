"""Row 11: predict near the ceiling of Python HTTP, driven by wrk (bench/wrk_load.py).

Against, in the same run: FastAPI with an `async def` endpoint and one torch thread (the baseline a
competent user writes), the sync endpoint of rows 1-2 with torch's default threads, and a raw ASGI
app answering a constant (the ceiling). Then the service's throughput with API_PROCESSES=2 against 1,
the second service on the same database and artifacts.
"""

import statistics
from pathlib import Path

from bench import host_noise, http_load, wrk_load
from bench.processes import free_port, python_module, service
from bench.report import Row, ratio_row

P50_VS_ASYNC = 1.0
P99_VS_OWN_P50 = 2.0
THROUGHPUT_VS_ASYNC = 3.0
THROUGHPUT_VS_CEILING = 0.25
MANY = 64  # connections for throughput
# The service and its baseline alternate this many times: on 2 shared cores one 5 s measurement of a
# p50 moves by ±15 % from run to run.
ROUNDS = 3


def measure(url: str, model_id: str, artifact: Path, sample: dict, sync_url: str, folder: Path, seconds: float) -> list[Row]:
    targets = {"service": f"{url}/v1/models/{model_id}/predict", "sync": f"{sync_url}/predict"}
    raw_port, async_port = free_port(), free_port()
    with (
        python_module("bench.ceiling_apps", {}, folder / "raw.log", f"http://127.0.0.1:{raw_port}/", ("raw", str(raw_port))),
        python_module(
            "bench.ceiling_apps",
            {},
            folder / "async.log",
            f"http://127.0.0.1:{async_port}/healthz",
            ("async", str(artifact), str(async_port)),
        ),
    ):
        targets |= {"raw": f"http://127.0.0.1:{raw_port}/", "async": f"http://127.0.0.1:{async_port}/predict"}
        compared = ("service", "async")
        rounds = [{name: _both(targets[name], sample, seconds) for name in compared} for _ in range(ROUNDS)]
        one, many = ({name: _median([measured[name][load] for measured in rounds]) for name in compared} for load in (0, 1))
        for name in ("sync", "raw"):
            one[name], many[name] = _both(targets[name], sample, seconds)
    host_tail = host_noise.p99_over_p50(seconds)
    tool = one["service"].tool
    note = f"{tool}; {seconds:g} s per measurement, service and async def: median of {ROUNDS} alternating rounds" + (
        "" if tool == "wrk" else f"; {wrk_load.INSTALL}"
    )
    rows = [
        ratio_row(
            "11. predict p50, 1 connection (service vs FastAPI async def, 1 torch thread)",
            one["service"].p50_ms,
            one["async"].p50_ms,
            "ms",
            P50_VS_ASYNC,
            higher_is_better=False,
            note=note + f"; sync FastAPI p50 {one['sync'].p50_ms:.2f} ms, raw ASGI p50 {one['raw'].p50_ms:.2f} ms",
        ),
        ratio_row(
            "11. predict p99, 1 connection (vs the service's own p50)",
            one["service"].p99_ms,
            one["service"].p50_ms,
            "ms",
            P99_VS_OWN_P50,
            higher_is_better=False,
            note=f"in the same run, the async def baseline's p99: {one['async'].p99_ms / one['async'].p50_ms:.2f}× its own p50; "
            f"the raw ASGI app's: {one['raw'].p99_ms / one['raw'].p50_ms:.2f}×; a fixed ~0.2 ms piece of CPU work "
            f"(bench/host_noise.py) timed back to back for {seconds:g} s: {host_tail:.2f}×",
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs FastAPI async def)",
            many["service"].requests_per_second,
            many["async"].requests_per_second,
            "req/s",
            THROUGHPUT_VS_ASYNC,
            higher_is_better=True,
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs raw ASGI constant)",
            many["service"].requests_per_second,
            many["raw"].requests_per_second,
            "req/s",
            THROUGHPUT_VS_CEILING,
            higher_is_better=True,
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs FastAPI sync, torch's default threads)",
            many["service"].requests_per_second,
            many["sync"].requests_per_second,
            "req/s",
            None,
            higher_is_better=True,
        ),
    ]
    rows.append(_two_processes(folder, model_id, sample, many["service"].requests_per_second, seconds))
    return rows


def _two_processes(folder: Path, model_id: str, sample: dict, one_process: float, seconds: float) -> Row:
    data = folder / "two-processes"
    data.mkdir()
    shared = {"DATABASE_URL": f"sqlite:///{(folder / 'bnjobs.sqlite3').resolve()}", "ARTIFACTS_DIR": str(folder / "artifacts")}
    with service(data, API_PROCESSES="2", **shared) as (url, _):
        two = _load(f"{url}/v1/models/{model_id}/predict", sample, MANY, seconds)
    return ratio_row(
        f"11. predict throughput, {MANY} connections, API_PROCESSES=2 vs 1",
        two.requests_per_second,
        one_process,
        "req/s",
        None,
        higher_is_better=True,
        note="the second service on the same SQLite database and artifacts; 2 cores, shared with the load generator",
    )


def _both(url: str, sample: dict, seconds: float) -> tuple[wrk_load.Load, wrk_load.Load]:
    """At one connection (latency), then at MANY (throughput)."""
    return _load(url, sample, 1, seconds), _load(url, sample, MANY, seconds)


def _median(loads: list[wrk_load.Load]) -> wrk_load.Load:
    """Each number's median over the rounds."""
    return wrk_load.Load(
        statistics.median(load.p50_ms for load in loads),
        statistics.median(load.p99_ms for load in loads),
        statistics.median(load.requests_per_second for load in loads),
        loads[0].tool,
    )


def _load(url: str, sample: dict, connections: int, seconds: float) -> wrk_load.Load:
    target = http_load.post_json(url, sample)
    wrk_load.run(url, target, connections, min(seconds, 1.0))  # warm: connections, caches, the model's first load
    return wrk_load.run(url, target, connections, seconds)
