"""Row 5: job dispatch latency, from submission (`created_at`) to a worker starting it (`started_at`).

Jobs go one at a time, each after the last finished, so none waits behind another.
"""

import statistics

import httpx

from bench.jobs import SMALL_MODEL, job_body, seconds_between, train
from bench.report import Row, absolute_row


def dispatch_seconds(client: httpx.Client, jobs: int, seed: int = 0) -> tuple[list[float], list[str]]:
    """Seconds from submission to running per job, and the models the jobs made."""
    latencies, models = [], []
    for index in range(jobs):
        job = train(client, job_body(SMALL_MODEL, "iris", epochs=1, seed=seed + index))
        latencies.append(seconds_between(job["created_at"], job["started_at"]))
        models.append(job["model_id"])
    return latencies, models


def row(mode: str, latencies: list[float], limit_ms: float) -> Row:
    p50 = statistics.median(latencies) * 1000
    return absolute_row(
        f"5. job dispatch p50, submit → running ({mode})",
        p50,
        None,
        "ms",
        f"≤ {limit_ms:g} ms",
        p50 <= limit_ms,
        note=f"{len(latencies)} jobs, max {max(latencies) * 1000:.0f} ms",
    )
