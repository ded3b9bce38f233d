"""Row 1: one-sample predict latency over HTTP on loopback, the service against the minimal endpoint.

One client sends a request when the last answer is in. Service and baseline take turns in rounds,
so that load from other work on the machine falls on both alike.
"""

from bench import http_load
from bench.report import Row, ratio_row

TARGET_P50 = 1.2  # the service's p50 at most 1.2× the minimal endpoint's


def measure(service: tuple[str, int, bytes], baseline: tuple[str, int, bytes], rounds: int, per_round: int) -> list[Row]:
    for target in (service, baseline):
        http_load.sequential_latencies(target, per_round // 4)  # warm up: connections, caches, first forward
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours += http_load.sequential_latencies(service, per_round)
        theirs += http_load.sequential_latencies(baseline, per_round)
    service_latency, baseline_latency = http_load.summarise(ours), http_load.summarise(theirs)
    note = f"{len(ours)} requests each, in {rounds} alternating rounds"
    return [
        ratio_row(
            "1. predict latency p50, 1 sample (service vs minimal FastAPI)",
            service_latency.p50_ms,
            baseline_latency.p50_ms,
            "ms",
            TARGET_P50,
            higher_is_better=False,
            note=note,
        ),
        ratio_row(
            "1. predict latency p99, 1 sample (service vs minimal FastAPI)",
            service_latency.p99_ms,
            baseline_latency.p99_ms,
            "ms",
            None,
            higher_is_better=False,
        ),
    ]
