"""`python -m bench [--quick]`: measure the service against its baselines and print the table.

The service runs as deployed (`python -m service`, embedded worker, SQLite, folder broker) with a
temporary DATA_DIR; models are trained through its API. With redis-server installed, dispatch is
measured again with a Redis broker.
"""

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from bench import (
    activations,
    ceiling,
    data_parallel,
    dispatch,
    efficiency,
    folding,
    http_load,
    latency,
    memory,
    resnet,
    throughput,
    training,
)
from bench.jobs import MLP_64_100_100_100_10, SMALL_MODEL, job_body, train
from bench.processes import free_port, python_module, redis_server, rss_bytes, service
from bench.report import Row, table
from bncore.data.builtin import load_dataset


@dataclass(frozen=True)
class Scale:
    latency_rounds: int
    latency_per_round: int
    throughput_rounds: int
    throughput_seconds: float
    forward_seconds: float  # per folding case
    training_epochs: int
    training_rounds: int  # row 8
    dispatch_jobs: int
    cached_models: int
    efficiency_batches: int
    matmul_size: int
    resnet_samples: int  # synthetic 3×32×32 images for row 8
    resnet_epochs: int
    activation_epochs: int  # row 10
    best_of_rounds: int  # rows 4 and 10: rounds of the case and its baseline in turns, each side's best counts
    wrk_seconds: float  # per row-11 measurement
    wrk_rounds: int  # row 11: rounds of the service and its baselines in turns
    parallel_mlp_samples: int  # row 12: the wide MLP's training samples, on 1 and on 2 processes
    parallel_resnet_samples: int  # row 12: ResNet-20's training images
    parallel_epochs: int  # row 12: the first is warm-up, not timed


FULL = Scale(5, 300, 3, 4.0, 2.0, 20, 2, 20, 50, 20, 2048, 1280, 1, 10, 9, 3.0, 5, 8192, 256, 2)
QUICK = Scale(1, 30, 1, 1.0, 0.1, 1, 1, 2, 3, 2, 512, 160, 1, 1, 1, 1.0, 1, 1024, 128, 2)
SERVICE_SETTINGS = {"MODEL_CACHE_SIZE": "64"}  # room for the cached models of row 6; everything else default
STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def serving_rows(client: httpx.Client, url: str, folder: Path, scale: Scale) -> list[Row]:
    """Rows 1 and 2: the service and the minimal endpoint answer the same model and sample."""
    progress("rows 1-2: training the MLP through the API")
    model_id = train(client, job_body(MLP_64_100_100_100_10, "digits", epochs=3))["model_id"]
    artifact = folder / "mlp.safetensors"
    artifact.write_bytes(client.get(f"/v1/models/{model_id}/artifact").content)
    port = free_port()
    sample = {"inputs": [load_dataset("digits").features[0].astype(int).tolist()]}  # a handwritten 0
    with python_module(
        "bench.minimal_endpoint", {}, folder / "minimal.log", f"http://127.0.0.1:{port}/healthz", (str(artifact), str(port))
    ):
        progress("rows 1-2: latency and throughput, service and minimal endpoint in turns")
        ours = http_load.post_json(f"{url}/v1/models/{model_id}/predict", sample)
        theirs = http_load.post_json(f"http://127.0.0.1:{port}/predict", sample)
        rows = latency.measure(ours, theirs, scale.latency_rounds, scale.latency_per_round)
        rows.append(throughput.measure(ours, theirs, scale.throughput_rounds, scale.throughput_seconds))
        progress("row 11: wrk against the service, FastAPI async and sync, a raw ASGI app; API_PROCESSES=2")
        ceiling_rows = ceiling.measure(
            url, model_id, artifact, sample, f"http://127.0.0.1:{port}", folder, scale.wrk_seconds, scale.wrk_rounds
        )
    stats = client.get(f"/v1/models/{model_id}/serving").json()
    rows[-1] = dataclasses.replace(
        rows[-1],
        note=rows[-1].note
        + (
            f"; the service answered {stats['requests']} requests in {stats['forward_passes']} forward passes"
            f" (largest batch {stats['largest_batch_rows']} rows)"
        ),
    )
    return rows + ceiling_rows


def service_rows(folder: Path, scale: Scale) -> list[Row]:
    """Rows 1, 2, 4, embedded 5 and 6, against one API process."""
    with service(folder, **SERVICE_SETTINGS) as (url, process), httpx.Client(base_url=url, timeout=120) as client:
        rss_at_start = rss_bytes(process.pid)
        rows = serving_rows(client, url, folder, scale)
        progress("row 4: a training job and the plain loop")
        rows.append(training.measure(client, scale.training_epochs, scale.best_of_rounds))
        progress(f"row 5: dispatch of {scale.dispatch_jobs} jobs (embedded)")
        latencies, models = dispatch.dispatch_seconds(client, scale.dispatch_jobs)
        rows.append(dispatch.row("embedded: folder broker, SQLite", latencies, 500))
        progress(f"row 6: {scale.cached_models} small models into the cache")
        for seed in range(len(models), scale.cached_models):
            models.append(train(client, job_body(SMALL_MODEL, "iris", epochs=1, seed=seed))["model_id"])
        memory.load_into_cache(client, models)
        rows.append(memory.row(process.pid, len(models), rss_at_start))
        if resnet.available():
            progress(f"row 8: a ResNet-20 job on {scale.resnet_samples} images and the plain loop")
            rows.append(resnet.training_row(client, scale.resnet_samples, scale.resnet_epochs, scale.training_rounds))
    return rows


def redis_rows(folder: Path, scale: Scale) -> list[Row]:
    with redis_server(folder) as redis_url:
        if redis_url is None:
            return []
        progress(f"row 5: dispatch of {scale.dispatch_jobs} jobs (Redis)")
        data = folder / "redis-mode"
        data.mkdir()
        with service(data, REDIS_URL=redis_url) as (url, _), httpx.Client(base_url=url, timeout=120) as client:
            train(client, job_body(SMALL_MODEL, "iris", epochs=1))  # the worker's first job warms it up
            latencies, _ = dispatch.dispatch_seconds(client, scale.dispatch_jobs, seed=1)
    return [dispatch.row("Redis broker, SQLite", latencies, 100)]


def parallel_cases(scale: Scale) -> list[data_parallel.Case]:
    cases = [data_parallel.wide_mlp(scale.parallel_mlp_samples, scale.parallel_epochs)]
    if resnet.available():
        cases.append(data_parallel.resnet_20(scale.parallel_resnet_samples, scale.parallel_epochs))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: few samples, numbers not meaningful")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    scale = QUICK if args.quick else FULL
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bnjobs-bench-") as tmp:
        folder = Path(tmp)
        progress("row 3: folded and unfolded CNN forward passes")
        rows += folding.measure(scale.forward_seconds)
        if resnet.available():
            progress("row 9: ResNet-20 forward passes, served and eval")
            rows += resnet.predict_rows(scale.forward_seconds)
        progress("row 7: matmul peak and a wide MLP epoch")
        rows.append(efficiency.measure(scale.efficiency_batches, scale.matmul_size))
        progress("row 10: training with and without activation tracking")
        rows.append(activations.measure(scale.activation_epochs, scale.best_of_rounds))
        progress("row 12: data-parallel training on 2 processes and on 1")
        rows += data_parallel.measure(parallel_cases(scale), 2, torch.device("cpu"))
        progress("starting the service")
        rows += service_rows(folder, scale)
        rows += redis_rows(folder, scale)
    rows.sort(key=lambda row: int(row.name.split(".")[0]))
    print(table(rows))
    print(
        f"\n{'quick' if args.quick else 'full'} run in {time.monotonic() - STARTED:.0f} s on "
        f"{torch.get_num_threads()} torch threads; each ratio compares numbers measured in this run."
    )


if __name__ == "__main__":
    main()
