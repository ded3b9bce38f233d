"""Rows 8 and 9: ResNet-20 on 3×32×32 images, trained with the usual recipe and served.

Row 8 trains through the API (the images uploaded as an .npz dataset) and times the job's epochs against
bench.plain_loop's ResNet with the same recipe: SGD with momentum and weight decay, a cosine schedule
stepped per step, random crops (padding 4) and flips. Row 9 is row 3 for a ResNet-20: the served graph,
BN folded, against eval mode. Both need the "resnet" architecture; without it they are left out.
"""

import io
import typing

import httpx
import numpy as np

from bench import folding, plain_loop
from bench.jobs import wait_finished
from bench.report import Row, ratio_row
from bench.synthetic_images import SHAPE, image_dataset, synthetic_images
from bncore.data.builtin import prepare_data
from bncore.specs import ModelSpec

TARGET = 0.9  # the job at least 0.9× the plain loop's samples per second
DEPTH, WIDTH, BATCH_SIZE = 20, 16, 128
RESNET_20 = {"architecture": "resnet", "num_classes": 10, "depth": DEPTH, "width": WIDTH}
RECIPE = {
    "batch_size": BATCH_SIZE,
    "learning_rate": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": {"kind": "cosine"},
    "augmentation": {"random_crop_padding": 4, "horizontal_flip": True},
}
POLL_SECONDS = 0.5


def available() -> bool:
    """Whether this checkout's job spec knows the "resnet" architecture."""
    return "resnet" in typing.get_args(ModelSpec.model_fields["architecture"].annotation)


def upload_images(client: httpx.Client, count: int) -> str:
    images, labels = synthetic_images(count)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=images, y=labels)
    response = client.post("/v1/datasets", files={"file": ("images.npz", buffer.getvalue())}, data={"name": "bench images"})
    if response.status_code != 201:
        raise RuntimeError(f"uploading the images: HTTP {response.status_code} {response.text}")
    return response.json()["id"]


def training_row(client: httpx.Client, samples: int, epochs: int, rounds: int) -> Row:
    """Best of `rounds` alternating runs of each side: one epoch of ten steps moves by a fifth from run to run here."""
    dataset_id = upload_images(client, samples)
    body = {"model": RESNET_20, "dataset": {"id": dataset_id}, "training": {"seed": 0, "epochs": epochs, **RECIPE}}
    data = prepare_data(image_dataset(samples), SHAPE, 0.2, 0)
    trained = epochs * len(data.x_train)
    job_rates, plain_rates = [], []
    for _ in range(rounds):
        job = _run_job(client, body)
        job_rates.append(trained / sum(epoch["seconds"] for epoch in job["metrics"]))
        plain_rates.append(trained / plain_loop.train_resnet_seconds(data, DEPTH, WIDTH, 10, epochs, BATCH_SIZE))
    return ratio_row(
        f"8. training, ResNet-{DEPTH} on 3×32×32, batch {BATCH_SIZE}, cosine + crops + flips (job vs plain loop)",
        max(job_rates),
        max(plain_rates),
        "samples/s",
        TARGET,
        higher_is_better=True,
        note=f"{samples} synthetic images uploaded as .npz, {epochs} epoch(s), best of {rounds}; both time only their "
        f"epochs, as row 4; final val acc {job['metrics'][-1]['val_accuracy']:.3f}",
    )


def _run_job(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"submitting the ResNet job: HTTP {response.status_code} {response.text}")
    return wait_finished(client, response.json()["id"], timeout=1800, poll_seconds=POLL_SECONDS)


def predict_rows(seconds_per_case: float) -> list[Row]:
    """Row 9, without targets: issue 18 sets folding's for the plain CNN of row 3 (docs/performance.md gives
    both models' folding-alone ratios over runs)."""
    name = f"9. ResNet-{DEPTH} {'×'.join(map(str, SHAPE))} predict"
    return folding.measure(seconds_per_case, [(name, folding.with_made_up_statistics(RESNET_20, SHAPE), None)])
