"""Row 2: predict throughput with 64 concurrent clients, the batching service against the minimal endpoint."""

from bench import http_load
from bench.report import Row, ratio_row

CLIENTS = 64
TARGET = 2.0  # at least twice the minimal endpoint's requests per second


def measure(service: tuple[str, int, bytes], baseline: tuple[str, int, bytes], rounds: int, seconds: float) -> Row:
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(http_load.throughput(service, CLIENTS, seconds))
        theirs.append(http_load.throughput(baseline, CLIENTS, seconds))
    return ratio_row(
        f"2. predict throughput, {CLIENTS} clients (batching service vs minimal FastAPI)",
        http_load.median(ours),
        http_load.median(theirs),
        "req/s",
        TARGET,
        higher_is_better=True,
        note=f"median of {rounds} alternating rounds of {seconds:g} s, 1 sample per request",
    )
