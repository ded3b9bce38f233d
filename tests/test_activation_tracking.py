"""A user watches internal covariate shift: the percentiles of the inputs to each non-linearity while a job trains."""

import json
from collections.abc import Callable

import httpx
import numpy as np
import torch

from bncore.data.builtin import prepare_data
from bncore.data.catalog import BUILT_INS
from bncore.jobs.execution import train_model
from bncore.specs import JobSpec
from bncore.training.activations import probe_indices
from bncore.training.checkpoints import Checkpoint
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.loop import train
from bncore.training.networks import build_network
from bncore.training.schedules import steps_per_epoch
from bnjobs.client import Client
from tests.conftest import RunningService
from tests.support.jobs import job_request, submit
from tests.support.jobs import train as train_job
from tests.test_cli import bnjobs, row_of

STATISTICS = ("p15", "p50", "p85", "mean", "std")


def tracked_spec(epochs: int = 2, every_steps: int | None = None, **model: object) -> JobSpec:
    tracking = {"layers": "all"} | ({"every_steps": every_steps} if every_steps else {})
    return JobSpec.model_validate(
        {
            "model": {"architecture": "mlp", "num_classes": 10, "activation": "sigmoid", "hidden_sizes": [32, 32], **model},
            "dataset": {"name": "digits"},
            "training": {"epochs": epochs, "seed": 3, "track_activations": tracking},
        }
    )


def numpy_inputs_to_nonlinearities(state: dict[str, torch.Tensor], x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The mlp's forward pass in train mode, in float64 numpy: Linear (no bias), BN with the batch's biased
    variance, sigmoid; what enters each sigmoid, by its module's name."""
    seen = {}
    for index in (1, 2):
        z = x @ state[f"fc{index}.weight"].double().numpy().T
        mean, var = z.mean(axis=0), z.var(axis=0)
        z = (z - mean) / np.sqrt(var + eps) * state[f"bn{index}.weight"].double().numpy() + state[
            f"bn{index}.bias"
        ].double().numpy()
        seen[f"act{index}"] = z
        x = 1 / (1 + np.exp(-z))
    return seen


def assert_matches_numpy(record: dict, state: dict[str, torch.Tensor], probe: np.ndarray) -> None:
    for name, values in numpy_inputs_to_nonlinearities(state, probe, 1e-5).items():
        expected = [*np.percentile(values, [15, 50, 85]), values.mean(), values.std(ddof=1)]
        np.testing.assert_allclose(record["layers"][name], expected, rtol=1e-4, atol=1e-5)


def test_the_percentiles_are_numpys_on_the_fixed_probe_batch() -> None:
    spec = tracked_spec(epochs=2)
    data = prepare_data(BUILT_INS.load(spec.dataset), (64,), spec.training.validation_fraction, spec.training.seed)
    steps = steps_per_epoch(len(data.x_train), spec.training.batch_size)
    spec = tracked_spec(epochs=2, every_steps=steps)  # probes at 0, the end of epoch 1 and the end of training
    probe = data.x_train[probe_indices(len(data.x_train), spec.training.seed)].double().numpy()
    assert probe.shape == (256, 64)

    torch.manual_seed(spec.training.seed)
    initial = {name: value.clone() for name, value in build_network(spec.model, (64,)).state_dict().items()}
    trained, result = train_model(spec, torch.device("cpu"))
    records = [record for metrics in result.history for record in metrics.activations]

    assert [record["step"] for record in records] == [0, steps, 2 * steps]
    assert_matches_numpy(records[0], initial, probe)
    assert_matches_numpy(records[-1], trained.network.state_dict(), probe)


def test_tracking_leaves_training_untouched() -> None:
    tracked, _ = train_model(tracked_spec(epochs=2, every_steps=3, dropout=0.2), torch.device("cpu"))
    untracked_spec = tracked_spec(epochs=2, dropout=0.2).model_copy(deep=True)
    untracked_spec.training.track_activations = None
    untracked, _ = train_model(untracked_spec, torch.device("cpu"))
    for name, value in tracked.network.state_dict().items():
        assert torch.equal(value, untracked.network.state_dict()[name]), name


def test_a_resumed_run_keeps_the_series_exact() -> None:
    spec = tracked_spec(epochs=3, every_steps=7)
    data = prepare_data(BUILT_INS.load(spec.dataset), (64,), spec.training.validation_fraction, spec.training.seed)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(spec.training.seed)
        return build_network(spec.model, (64,))

    whole = train(fresh(), data, spec.training).history
    saved: list[Checkpoint] = []

    def keep_first(metrics: EpochMetrics, capture: Callable[[], Checkpoint]) -> None:
        if not saved:
            checkpoint = capture()
            saved.append(
                Checkpoint(
                    checkpoint.epoch,
                    checkpoint.history,
                    {k: v.clone() for k, v in checkpoint.tensors.items()},
                    checkpoint.metadata,
                )
            )

    train(fresh(), data, spec.training, on_epoch=keep_first)
    # Copied at once and read back through its JSON header, as the worker stores it.
    stored = Checkpoint.from_stored(saved[0].tensors, saved[0].metadata)
    resumed = train(fresh(), data, spec.training, resume=stored).history

    assert [m.activations for m in resumed] == [m.activations for m in whole]
    assert [r["step"] for m in whole for r in m.activations][:3] == [0, 7, 14]


def test_a_job_serves_its_activation_percentiles(client: httpx.Client, service: RunningService) -> None:
    body = job_request(
        model={"activation": "sigmoid", "hidden_sizes": [32, 32, 32]},
        training={"epochs": 2, "track_activations": {"layers": ["act1", "act3"], "every_steps": 5}},
    )
    job = train_job(client, body)

    response = client.get(f"/v1/jobs/{job['id']}/activations")
    assert response.status_code == 200
    layers = response.json()["layers"]
    assert [layer["name"] for layer in layers] == ["act1", "act3"]
    for layer in layers:
        assert set(layer) == {"name", "steps", *STATISTICS}
        assert layer["steps"][:3] == [0, 5, 10]
        assert all(len(layer[key]) == len(layer["steps"]) for key in STATISTICS)
        assert all(low <= mid <= high for low, mid, high in zip(layer["p15"], layer["p50"], layer["p85"], strict=True))
    assert "activations" not in json.dumps(job["metrics"])

    plot = client.get(f"/v1/jobs/{job['id']}/activations.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG\r\n\x1a\n")

    with Client(service.url) as sdk:
        assert sdk.jobs.get(job["id"]).activations().model_dump() == response.json()
    shown = bnjobs(service, "jobs", "activations", job["id"])
    assert shown.returncode == 0, shown.stderr
    assert row_of(shown.stdout, "act3")[1] == "0"
    as_json = bnjobs(service, "jobs", "activations", job["id"], "--json")
    assert json.loads(as_json.stdout) == response.json()


def test_an_unknown_layer_is_refused_by_name(client: httpx.Client) -> None:
    body = job_request(training={"track_activations": {"layers": ["act1", "relu7"]}})
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    error = response.json()
    assert "training.track_activations.layers" in json.dumps(error)
    assert "relu7" in json.dumps(error)


def test_a_job_without_tracking_has_no_activations(client: httpx.Client) -> None:
    job = submit(client, job_request(training={"epochs": 1}))
    response = client.get(f"/v1/jobs/{job['id']}/activations")
    assert response.status_code == 200
    assert response.json() == {"layers": []}
