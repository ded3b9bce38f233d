"""`python -m bench.profile_predict`: where a one-row predict spends its time, in the API process.

A model is trained through a real service; then the app is built in this process on the same
DATA_DIR and called as uvicorn calls it (ASGI), N times, under cProfile. The event loop's thread (where
a lone small request runs its forward pass) and the forward pass alone, called as the service calls
it, are profiled apart. Prints the top lines of each by own time.
"""

import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.jobs import MLP_64_100_100_100_10, job_body, train
from bench.processes import service
from bncore.data.builtin import load_dataset

REQUESTS = 3000
TOP = 18


def _request(model_id: str, body: bytes) -> tuple[dict, list[dict]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/v1/models/{model_id}/predict",
        "raw_path": f"/v1/models/{model_id}/predict".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    return scope, [{"type": "http.request", "body": body, "more_body": False}]


async def _drive(app: object, model_id: str, body: bytes, count: int, profile: cProfile.Profile | None) -> float:
    statuses: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one() -> None:
        scope, messages = _request(model_id, body)

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        await app(scope, receive, send)  # type: ignore[operator]

    for _ in range(200):  # warm: the model enters the cache, the fast path takes over
        await one()
    statuses.clear()
    if profile:
        profile.enable()
    start = time.perf_counter()
    for _ in range(count):
        await one()
    elapsed = time.perf_counter() - start
    if profile:
        profile.disable()
    assert set(statuses) == {200}, set(statuses)
    return elapsed / count


def top_lines(profile: cProfile.Profile, count: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(count)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
    return "\n".join(line.replace(str(Path.cwd()) + "/", "") for line in lines[start : start + count + 1])


async def profile_app(folder: Path, model_id: str, body: bytes) -> None:
    os.environ.update({"DATA_DIR": str(folder), "EMBEDDED_WORKERS": "0"})
    from bncore.settings import get_settings
    from bncore.structured_logs import configure_logging
    from service.app import create_app

    settings = get_settings()
    real_stderr = sys.stderr
    sys.stderr = (folder / "api.log").open("a")  # the access lines are written (and cost) as deployed, to a file
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        plain = await _drive(app, model_id, body, REQUESTS, None)
        loop_profile = cProfile.Profile()
        await _drive(app, model_id, body, REQUESTS, loop_profile)
        served = app.state.services.cache.lookup(model_id, None)
        forward_profile = cProfile.Profile()
        import torch

        from bncore.serving.served_model import _forward

        row = torch.tensor(json.loads(body)["inputs"], dtype=torch.float32)
        forward_profile.enable()
        start = time.perf_counter()
        for _ in range(REQUESTS):
            _forward(served.graph, served.drift, row)
        forward = (time.perf_counter() - start) / REQUESTS
        forward_profile.disable()
    sys.stderr = real_stderr
    print(f"one-row predict through the ASGI app, no HTTP: {plain * 1e6:.0f} µs a request unprofiled")
    print(f"of which the forward pass with drift taps: {forward * 1e6:.0f} µs (profiled)\n")
    print(f"event loop thread, {REQUESTS} requests, by own time:\n{top_lines(loop_profile, TOP)}\n")
    print(f"forward pass with drift taps, {REQUESTS} passes, by own time:\n{top_lines(forward_profile, TOP)}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bnjobs-profile-") as tmp:
        folder = Path(tmp)
        with service(folder) as (url, _), httpx.Client(base_url=url, timeout=120) as client:
            model_id = train(client, job_body(MLP_64_100_100_100_10, "digits", epochs=1))["model_id"]
        body = json.dumps({"inputs": [load_dataset("digits").features[0].astype(int).tolist()]}).encode()
        asyncio.run(profile_app(folder, model_id, body))


if __name__ == "__main__":
    main()
