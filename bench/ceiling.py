"""Row 11: predict near the ceiling of Python HTTP, driven by wrk (bench/wrk_load.py).

Against, in the same run: FastAPI with an `async def` endpoint and one torch thread (the baseline a
competent user writes), the sync endpoint of rows 1-2 with torch's default threads, and a raw ASGI
app answering a constant (the ceiling). Then the service's throughput with API_PROCESSES=2 against 1,
the second service on the same database and artifacts.
"""

import statistics
from collections.abc import Callable
from pathlib import Path

from bench import host_noise, http_load, wrk_load
from bench.processes import free_port, python_module, service
from bench.report import Row, ratio_row

P50_VS_ASYNC = 1.0
P99_VS_OWN_P50 = 2.0
THROUGHPUT_VS_ASYNC = 3.0
THROUGHPUT_VS_CEILING = 0.25
MANY = 64  # connections for throughput
Round = dict[str, tuple[wrk_load.Load, wrk_load.Load]]  # per server: at one connection, at MANY


def measure(
    url: str, model_id: str, artifact: Path, sample: dict, sync_url: str, folder: Path, seconds: float, rounds_count: int
) -> list[Row]:
    """`rounds_count` rounds of the service, its `async def` baseline and the raw app, one after another (which goes
    first alternates). Each target is judged by the round whose ratio is the median: a round's numbers share the
    host's state of the moment, which here flips by a third for seconds at a time (bench/host_noise.py)."""
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
        compared = ("service", "async", "raw")
        rounds: list[Round] = []
        for index in range(rounds_count):
            order = compared if index % 2 == 0 else compared[::-1]
            rounds.append({name: _both(targets[name], sample, seconds, warm_up=index == 0) for name in order})
        sync = _both(targets["sync"], sample, seconds, warm_up=True)
    host_tail = host_noise.p99_over_p50(seconds)

    def median_round(ratio: Callable[[Round], float]) -> Round:
        return sorted(rounds, key=ratio)[len(rounds) // 2]

    latency = median_round(lambda r: r["service"][0].p50_ms / r["async"][0].p50_ms)
    tail = median_round(lambda r: r["service"][0].p99_ms / r["service"][0].p50_ms)
    versus_async = median_round(lambda r: r["service"][1].requests_per_second / r["async"][1].requests_per_second)
    versus_raw = median_round(lambda r: r["service"][1].requests_per_second / r["raw"][1].requests_per_second)
    async_tail = statistics.median(r["async"][0].p99_ms / r["async"][0].p50_ms for r in rounds)
    raw_tail = statistics.median(r["raw"][0].p99_ms / r["raw"][0].p50_ms for r in rounds)
    tool = latency["service"][0].tool
    note = (
        f"{tool}; {seconds:g} s per measurement; the median of {rounds_count} rounds of service, async def and raw app in turns"
        + ("" if tool == "wrk" else f"; {wrk_load.INSTALL}")
    )
    rows = [
        ratio_row(
            "11. predict p50, 1 connection (service vs FastAPI async def, 1 torch thread)",
            latency["service"][0].p50_ms,
            latency["async"][0].p50_ms,
            "ms",
            P50_VS_ASYNC,
            higher_is_better=False,
            note=note + f"; sync FastAPI p50 {sync[0].p50_ms:.2f} ms, raw ASGI p50 {latency['raw'][0].p50_ms:.2f} ms",
        ),
        ratio_row(
            "11. predict p99, 1 connection (vs the service's own p50)",
            tail["service"][0].p99_ms,
            tail["service"][0].p50_ms,
            "ms",
            P99_VS_OWN_P50,
            higher_is_better=False,
            note=f"medians over the same rounds: the async def baseline's p99 {async_tail:.2f}× its own p50, the raw ASGI "
            f"app's {raw_tail:.2f}×; a fixed ~0.2 ms piece of CPU work (bench/host_noise.py) timed back to back for "
            f"{seconds:g} s: {host_tail:.2f}×",
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs FastAPI async def)",
            versus_async["service"][1].requests_per_second,
            versus_async["async"][1].requests_per_second,
            "req/s",
            THROUGHPUT_VS_ASYNC,
            higher_is_better=True,
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs raw ASGI constant)",
            versus_raw["service"][1].requests_per_second,
            versus_raw["raw"][1].requests_per_second,
            "req/s",
            THROUGHPUT_VS_CEILING,
            higher_is_better=True,
        ),
        ratio_row(
            f"11. predict throughput, {MANY} connections (service vs FastAPI sync, torch's default threads)",
            versus_async["service"][1].requests_per_second,
            sync[1].requests_per_second,
            "req/s",
            None,
            higher_is_better=True,
        ),
    ]
    rows.append(_two_processes(folder, model_id, sample, versus_async["service"][1].requests_per_second, seconds))
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


def _both(url: str, sample: dict, seconds: float, warm_up: bool) -> tuple[wrk_load.Load, wrk_load.Load]:
    """At one connection (latency), then at MANY (throughput)."""
    return _load(url, sample, 1, seconds, warm_up), _load(url, sample, MANY, seconds, warm_up)


def _load(url: str, sample: dict, connections: int, seconds: float, warm_up: bool = True) -> wrk_load.Load:
    target = http_load.post_json(url, sample)
    if warm_up:  # connections, caches, the model's first load
        wrk_load.run(url, target, connections, min(seconds, 1.0))
    return wrk_load.run(url, target, connections, seconds)
