"""`python -m bench.claims [--epochs N]`: run every preset through the service, on digits and on shapes32,
and write docs/bn-claims.md: one row per claim with what the paper says, what was measured and whether it held.

A real run: the API with its embedded worker (as `make run` starts it) in a throwaway data folder, each
preset one `POST /v1/experiments {"preset", "epochs", "dataset"}`, the claim read from its answer.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.processes import service
from bncore.jobs.presets import presets

DATASETS = ("digits", "shapes32")
PAGE = Path(__file__).resolve().parent.parent / "docs" / "bn-claims.md"
POLL_SECONDS = 1.0
PRESET_EPOCHS = 10  # what every preset asks for
SHORT_RUN = (
    f"That is fewer than the presets' {PRESET_EPOCHS}: a claim about training speed or final accuracy is measured",
    "early in training, and one that did not hold here may hold with the full schedule, or the other way round.",
)


def run_presets(
    client: httpx.Client, names: list[str], epochs: int, datasets: tuple[str, ...]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The presets on every dataset, all queued at once; each finished experiment by (preset, dataset)."""
    started = {}
    for dataset in datasets:
        for name in names:
            response = client.post("/v1/experiments", json={"preset": name, "epochs": epochs, "dataset": {"name": dataset}})
            response.raise_for_status()
            started[name, dataset] = response.json()["id"]
    finished = {}
    while len(finished) < len(started):
        for key, experiment_id in started.items():
            if key not in finished:
                experiment = client.get(f"/v1/experiments/{experiment_id}").json()
                if experiment["status"] == "finished":
                    finished[key] = experiment
                    print(f"{key[0]} on {key[1]}: {'held' if experiment['claim']['held'] else 'not held'}", flush=True)
        time.sleep(POLL_SECONDS)
    return finished


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_number(v) for v in value) + "]"
    return "—" if value is None else str(value)


def measured(evidence: dict[str, Any]) -> str:
    """The evidence's numbers on one line; per-layer details (mappings) are left to the JSON."""
    return "; ".join(
        f"{key.replace('_', ' ')} {_number(value)}" for key, value in evidence.items() if not isinstance(value, dict)
    )


def page(results: dict[tuple[str, str], dict[str, Any]], epochs: int, datasets: tuple[str, ...], seconds: float) -> str:
    header = [
        "claim",
        "the paper (or the seed) says",
        *(f"measured on {d}" for d in datasets),
        *(f"held on {d}" for d in datasets),
    ]
    lines = [
        "# BN's claims, measured by the service",
        "",
        'Each row is one preset (`POST /v1/experiments {"preset": NAME}`, see',
        "[experiments](experiments.md#presets-one-request-per-claim)):",
        "what the paper (Ioffe & Szegedy 2015) or this project's seed says, the numbers the claim's evaluator read from",
        "the finished experiment, and whether the claim held. `shapes32` is the generated 3×32×32 image set",
        "(`bncore/data/builtin.py`). Most presets train MLPs, which see its 3072 features flat; `small-batch` and",
        "`non-iid-batches` train a CNN of two Conv → norm → ReLU → max-pool blocks (16 and 32 channels).",
        "",
        f"**How this page was made:** `python -m bench.claims --epochs {epochs}` on this repository's machine",
        f"({platform.machine()}, {torch.get_num_threads()} torch threads, CPU, shared with other work), the API with its",
        f"embedded worker: every variant trained **{epochs} epochs**; it took **{seconds / 60:.1f} minutes** for",
        f"{len(results)} experiments.",
        *(() if epochs >= PRESET_EPOCHS else SHORT_RUN),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for name in dict.fromkeys(name for name, _ in results):
        preset = presets()[name]
        cells = [f"`{name}`: {preset.claim['statement']}", preset.paper]
        cells += [measured(results[name, d]["claim"]["evidence"]) for d in datasets]
        cells += ["**yes**" if results[name, d]["claim"]["held"] else "no" for d in datasets]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", "## The evidence in full", ""]
    for (name, dataset), experiment in results.items():
        lines += [f"### {name} on {dataset}", "", "```json", json.dumps(experiment["claim"]["evidence"], indent=1), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__)
    parser.add_argument("--epochs", type=int, default=PRESET_EPOCHS, help="epochs of every variant (the presets' own: 10)")
    parser.add_argument("--output", type=Path, default=PAGE)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=DATASETS, metavar="NAME")
    parser.add_argument("--presets", nargs="+", choices=sorted(presets()), default=sorted(presets()), metavar="NAME")
    args = parser.parse_args()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bnjobs-claims-") as folder,
        # Every variant of every preset is queued at once: more job submissions a minute than a user's limit.
        service(Path(folder), JOB_SUBMISSIONS_PER_MINUTE="100000") as (url, _),
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        results = run_presets(client, args.presets, args.epochs, tuple(args.datasets))
    args.output.write_text(page(results, args.epochs, tuple(args.datasets), time.monotonic() - started))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
