"""Row 6: resident memory of the API process with small models loaded into its inference cache."""

import httpx

from bench.processes import rss_bytes
from bench.report import Row, absolute_row

LIMIT_MB = 500.0
MB = 2**20


def load_into_cache(client: httpx.Client, model_ids: list[str]) -> None:
    """One predict per model loads it into the cache (MODEL_CACHE_SIZE must hold them all)."""
    for model_id in model_ids:
        response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
        response.raise_for_status()


def row(api_pid: int, models: int, rss_at_start: int) -> Row:
    rss = rss_bytes(api_pid) / MB
    return absolute_row(
        f"6. API process RSS, {models} small models cached (vs at start)",
        rss,
        rss_at_start / MB,
        "MB",
        f"≤ {LIMIT_MB:g} MB",
        rss <= LIMIT_MB,
        note="the API process alone (its embedded worker is another process), after rows 1, 2, 4 and 5 ran in it",
    )
