"""The recipe people train BN networks with: schedules, augmentation, label smoothing, clipping, early stopping."""

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, LRScheduler, MultiStepLR
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bncore.data.builtin import load_dataset, prepare_data
from bncore.jobs.execution import train_model
from bncore.jobs.experiments import variant_request
from bncore.specs import AugmentationSpec, JobSpec, ModelSpec, TrainingSpec
from bncore.storage.artifacts import ArtifactStore
from bncore.training.augmentation import BatchAugmenter
from bncore.training.checkpoints import Checkpoint
from bncore.training.loop import TrainingInterrupted, evaluate, train
from bncore.training.networks import build_network
from bncore.training.schedules import steps_per_epoch
from tests.support.jobs import figures, job_request, wait_for
from tests.support.jobs import train as train_job
from tests.support.processes import ROOT
from tests.test_readme_examples import run_command, sh_commands

IRIS = prepare_data(load_dataset("iris"), (4,), 0.2, 0)
IRIS_MODEL = ModelSpec(architecture="mlp", num_classes=3, hidden_sizes=[16])


def rates_of_every_step(spec: TrainingSpec) -> list[float]:
    """The learning rate each optimizer step used, read off the optimizer as it steps."""
    torch.manual_seed(0)
    network = build_network(IRIS_MODEL, (4,))
    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"]))
    try:
        result = train(network, IRIS, spec)
    finally:
        handle.remove()
    steps = steps_per_epoch(len(IRIS.x_train), spec.batch_size)
    assert [m.learning_rate for m in result.history] == [rates[(m.epoch - 1) * steps] for m in result.history]
    return rates


def torch_rates(spec: TrainingSpec, main: type[LRScheduler], warmup_steps: int, **arguments: Any) -> list[float]:
    """The same schedule from torch's own schedulers, stepped on a stand-alone optimizer: linear warm-up, then `main`."""
    steps = steps_per_epoch(len(IRIS.x_train), spec.batch_size)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=spec.learning_rate)
    rates = []
    for step in range(warmup_steps):
        rates.append(spec.learning_rate * (step + 1) / warmup_steps)
    scheduler = main(optimizer, **arguments)
    for _ in range(spec.epochs * steps - warmup_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_a_step_schedule_decays_by_gamma_at_each_milestone_after_its_warm_up() -> None:
    spec = TrainingSpec(
        epochs=8, batch_size=32, schedule={"kind": "step", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 1}
    )
    steps = steps_per_epoch(len(IRIS.x_train), 32)
    # Epochs 5 and 7 start at 4/8 and 6/8 of training: the decays happen between epochs.
    expected = torch_rates(spec, MultiStepLR, steps, milestones=[3 * steps, 5 * steps], gamma=0.1)
    np.testing.assert_allclose(rates_of_every_step(spec), expected, rtol=1e-12)


def test_an_exponential_schedule_multiplies_the_rate_by_gamma_each_epoch_stepping_smoothly() -> None:
    spec = TrainingSpec(epochs=5, batch_size=32, schedule={"kind": "exponential", "gamma": 0.5})
    steps = steps_per_epoch(len(IRIS.x_train), 32)
    rates = rates_of_every_step(spec)
    np.testing.assert_allclose(rates, torch_rates(spec, ExponentialLR, 0, gamma=0.5 ** (1 / steps)), rtol=1e-9)
    assert rates[steps] == pytest.approx(0.05) and rates[1] < rates[0]


def test_a_cosine_schedule_goes_down_to_min_lr_after_a_linear_warm_up() -> None:
    spec = TrainingSpec(epochs=6, batch_size=16, schedule={"kind": "cosine", "min_lr": 0.001, "warmup_epochs": 2})
    steps = steps_per_epoch(len(IRIS.x_train), 16)
    warmup = 2 * steps
    expected = torch_rates(spec, CosineAnnealingLR, warmup, T_max=6 * steps - warmup, eta_min=0.001)
    rates = rates_of_every_step(spec)
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    assert rates[0] == pytest.approx(0.1 / warmup) and rates[warmup] == pytest.approx(0.1) and rates[-1] > 0.001


def test_the_default_schedule_is_constant() -> None:
    assert set(rates_of_every_step(TrainingSpec(epochs=2))) == {0.1}


DIGITS_CNN = {"architecture": "cnn", "num_classes": 10, "input_shape": [1, 8, 8], "channels": [8]}
FULL_RECIPE = {
    "epochs": 5,
    "seed": 3,
    "schedule": {"kind": "cosine", "warmup_epochs": 1, "min_lr": 0.001},
    "augmentation": {"random_crop_padding": 1, "horizontal_flip": True},
    "label_smoothing": 0.1,
    "grad_clip_norm": 1.0,
    "early_stopping": {"patience": 10},
}


def test_a_job_stopped_mid_schedule_and_resumed_from_its_stored_checkpoint_ends_as_a_clean_run(tmp_path: Path) -> None:
    """Scheduler step count, augmentation draws and the best epoch so far all go through the stored checkpoint."""
    spec = JobSpec.model_validate({"model": DIGITS_CNN, "dataset": {"name": "digits"}, "training": FULL_RECIPE})
    clean, clean_result = train_model(spec, torch.device("cpu"))

    store = ArtifactStore(tmp_path)

    def stop_after_epoch_2(metrics, capture) -> None:
        if metrics.epoch == 2:
            saved = capture()
            store.save("job", saved.tensors, saved.metadata)
            raise TrainingInterrupted()

    with pytest.raises(TrainingInterrupted):
        train_model(spec, torch.device("cpu"), on_epoch=stop_after_epoch_2)
    checkpoint = Checkpoint.from_stored(*store.load_with_metadata("job"))
    resumed, resumed_result = train_model(spec, torch.device("cpu"), resume=checkpoint)

    assert [figures(m.__dict__) for m in resumed_result.history] == [figures(m.__dict__) for m in clean_result.history]
    assert resumed_result.best_epoch == clean_result.best_epoch
    clean_state, resumed_state = clean.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(clean_state[name], resumed_state[name]) for name in clean_state)
    rates = [m.learning_rate for m in clean_result.history]
    assert rates[0] < rates[1] > rates[2] > rates[3] > rates[4]  # warm-up, then the cosine


def test_augmentation_crops_and_flips_each_image_as_a_padded_copy_would() -> None:
    images = torch.randn(64, 3, 5, 6)
    augmented = BatchAugmenter(AugmentationSpec(random_crop_padding=2, horizontal_flip=True), 0, images.device)(images)
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    seen: set[tuple[int, int, bool]] = set()
    for index, image in enumerate(augmented.numpy()):
        matches = [
            (top, left, flip)
            for top in range(5)
            for left in range(5)
            for flip in (False, True)
            if np.array_equal(
                image, (lambda crop: crop[..., ::-1] if flip else crop)(padded[index, :, top : top + 5, left : left + 6])
            )
        ]
        assert matches, f"image {index} is no crop of its padded original"
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True} and len({(top, left) for top, left, _ in seen}) > 10
    again = BatchAugmenter(AugmentationSpec(random_crop_padding=2, horizontal_flip=True), 0, images.device)(images)
    assert torch.equal(augmented, again)


def test_validation_and_prediction_never_see_augmentation() -> None:
    spec = JobSpec.model_validate({"model": DIGITS_CNN, "dataset": {"name": "digits"}, "training": FULL_RECIPE | {"epochs": 2}})
    trained, result = train_model(spec, torch.device("cpu"))
    data = prepare_data(load_dataset("digits"), (1, 8, 8), 0.2, 3)
    logits = trained.predict(data.x_val * data.input_std + data.input_mean).logits
    assert F.cross_entropy(logits, data.y_val).item() == pytest.approx(result.kept.val_loss, rel=1e-5)
    assert torch.equal(logits, trained.predict(data.x_val * data.input_std + data.input_mean).logits)


def test_label_smoothing_is_cross_entropy_against_smoothed_targets() -> None:
    """One step over the whole split: the reported training loss is the initial network's, computed here in numpy."""
    spec = TrainingSpec(epochs=1, batch_size=len(IRIS.x_train), label_smoothing=0.2)
    torch.manual_seed(0)
    network = build_network(IRIS_MODEL, (4,))
    with torch.no_grad():
        logits = network.train()(IRIS.x_train).double().numpy()
    log_probabilities = logits - logits.max(1, keepdims=True)
    log_probabilities -= np.log(np.exp(log_probabilities).sum(1, keepdims=True))
    targets = np.full(logits.shape, 0.2 / 3)
    targets[np.arange(len(targets)), IRIS.y_train.numpy()] += 0.8
    expected = -(targets * log_probabilities).sum(1).mean()

    result = train(network, IRIS, spec)

    assert result.history[0].train_loss == pytest.approx(expected, rel=1e-5)


def test_an_epochs_training_loss_and_accuracy_weigh_each_batch_by_its_length() -> None:
    """120 samples in batches of 50, 50 and 20, at a learning rate too small to move the network: the epoch's
    figures are the means over its samples, computed here batch by batch in the job's shuffled order."""
    spec = TrainingSpec(epochs=1, batch_size=50, learning_rate=1e-12, momentum=0.0, seed=4)
    torch.manual_seed(0)
    network = build_network(IRIS_MODEL, (4,))
    order = torch.randperm(len(IRIS.x_train), generator=torch.Generator().manual_seed(spec.seed))
    loss_sum, hits = 0.0, 0
    with torch.no_grad():
        for batch in order.split(50):
            logits = network.train()(IRIS.x_train[batch]).double()
            loss_sum += F.cross_entropy(logits, IRIS.y_train[batch], reduction="sum").item()
            hits += int((logits.argmax(dim=1) == IRIS.y_train[batch]).sum())

    result = train(network, IRIS, spec)

    assert len(IRIS.x_train) == 120
    assert result.history[0].train_loss == pytest.approx(loss_sum / 120, rel=1e-5)
    assert result.history[0].train_accuracy == pytest.approx(hits / 120, abs=1e-6)


def test_gradient_clipping_bounds_the_total_norm_of_every_step() -> None:
    def largest_gradient_norm(clip: float | None) -> float:
        norms: list[float] = []

        def record(optimizer, args, kwargs) -> None:
            grads = [p.grad.numpy().ravel() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norms.append(float(np.linalg.norm(np.concatenate(grads))))

        torch.manual_seed(0)
        handle = register_optimizer_step_pre_hook(record)
        try:
            train(build_network(IRIS_MODEL, (4,)), IRIS, TrainingSpec(epochs=2, batch_size=16, grad_clip_norm=clip))
        finally:
            handle.remove()
        return max(norms)

    assert largest_gradient_norm(None) > 0.05
    assert largest_gradient_norm(0.05) <= 0.05 * (1 + 1e-5)


def test_early_stopping_keeps_the_best_epochs_weights() -> None:
    """Digits overfits within 40 epochs: training stops `patience` epochs after its lowest validation loss."""
    data = prepare_data(load_dataset("digits"), (64,), 0.2, 0)
    spec = TrainingSpec(epochs=40, early_stopping={"patience": 3})
    torch.manual_seed(0)
    network = build_network(ModelSpec(architecture="mlp", num_classes=10), (64,))

    result = train(network, data, spec)

    losses = [m.val_loss for m in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert len(losses) == result.best_epoch + 3 < 40
    assert evaluate(network, data.x_val, data.y_val)[0] == pytest.approx(losses[result.best_epoch - 1], rel=1e-6)


def test_a_scheduled_early_stopped_job_reports_its_rates_and_best_epoch(client: httpx.Client) -> None:
    body = job_request(
        training={
            "epochs": 30,
            "seed": 0,
            "schedule": {"kind": "step", "milestones": [0.1], "gamma": 0.5},
            "early_stopping": {"patience": 2},
            "label_smoothing": 0.05,
            "grad_clip_norm": 5.0,
        }
    )
    job = train_job(client, body)
    assert job["spec"]["training"]["schedule"] | body["training"]["schedule"] == job["spec"]["training"]["schedule"]
    rates = [m["learning_rate"] for m in job["metrics"]]
    assert rates[:4] == [0.1, 0.1, 0.1, 0.05]  # epoch 4 starts at 3/30 ≥ 0.1 of training
    best = job["best_epoch"]
    assert best == min(job["metrics"], key=lambda m: m["val_loss"])["epoch"]
    assert len(job["metrics"]) == best + 2 < 30
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["final_metrics"] == figures(job["metrics"][best - 1])


def test_a_job_without_early_stopping_has_no_best_epoch_and_a_constant_rate(client: httpx.Client) -> None:
    job = train_job(client, job_request(training={"epochs": 2, "learning_rate": 0.05}))
    assert job["best_epoch"] is None
    assert [m["learning_rate"] for m in job["metrics"]] == [0.05, 0.05]
    assert job["spec"]["training"]["schedule"]["kind"] == "constant"


BAD_RECIPES = [
    ({"schedule": {"kind": "step", "milestones": [0.5, 1.0]}}, "training.schedule.milestones.1", "less than 1"),
    ({"schedule": {"kind": "step", "milestones": [0]}}, "training.schedule.milestones.0", "greater than 0"),
    ({"schedule": {"kind": "linear"}}, "training.schedule.kind", "'constant', 'step', 'exponential' or 'cosine'"),
    (
        {"epochs": 3, "schedule": {"kind": "cosine", "warmup_epochs": 4}},
        "training.schedule.warmup_epochs",
        "longer than training",
    ),
    ({"schedule": {"kind": "cosine", "min_lr": 0.5}}, "training.schedule.min_lr", "at most training.learning_rate"),
    ({"augmentation": {"horizontal_flip": True}}, "training.augmentation", "image inputs shaped [C, H, W]"),
    ({"augmentation": {"random_crop_padding": -1}}, "training.augmentation.random_crop_padding", "greater than or equal to 0"),
    ({"label_smoothing": -0.1}, "training.label_smoothing", "greater than or equal to 0"),
    ({"grad_clip_norm": -1.0}, "training.grad_clip_norm", "greater than 0"),
    ({"grad_clip_norm": 0}, "training.grad_clip_norm", "greater than 0"),
    ({"early_stopping": {"patience": 0}}, "training.early_stopping.patience", "greater than or equal to 1"),
]


@pytest.mark.parametrize("training, field, expected", BAD_RECIPES, ids=[case[1] + ":" + str(case[0]) for case in BAD_RECIPES])
def test_a_bad_recipe_is_refused_with_the_field_named(client: httpx.Client, training: dict, field: str, expected: str) -> None:
    response = client.post("/v1/jobs", json=job_request(training=training))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in [f["field"] for f in error["fields"]]
    assert expected in error["message"]


def test_augmentation_is_accepted_for_images(client: httpx.Client) -> None:
    body = job_request(
        model={"architecture": "cnn", "input_shape": [1, 8, 8], "channels": [4]},
        training={"epochs": 1, "augmentation": {"random_crop_padding": 1, "horizontal_flip": True}},
    )
    job = train_job(client, body)
    assert job["spec"]["training"]["augmentation"] == {"random_crop_padding": 1, "horizontal_flip": True}
    assert math.isfinite(job["metrics"][0]["val_loss"])


def test_the_docs_recipe_example_trains_as_written(service, client: httpx.Client, tmp_path: Path) -> None:
    section = (ROOT / "docs" / "training-recipes.md").read_text().split("## Schedules, augmentation and early stopping")[1]
    (command,) = [command for command in sh_commands(section.split("\n## ")[0]) if command.startswith("curl ")]
    job = wait_for(client, json.loads(run_command(command, service, tmp_path))["id"])
    assert job["status"] == "succeeded", job["error"]
    rates = [m["learning_rate"] for m in job["metrics"]]
    assert rates[0] == pytest.approx(0.2 / 23) and rates[1] == 0.2
    assert rates[6:9] == [pytest.approx(0.02)] * len(rates[6:9])
    assert job["best_epoch"] == min(job["metrics"], key=lambda m: m["val_loss"])["epoch"]


def test_an_experiment_variant_overrides_one_field_of_the_schedule() -> None:
    base = job_request(training={"schedule": {"kind": "step", "milestones": [0.3], "gamma": 0.5}})
    merged = variant_request(base, {"training": {"schedule": {"kind": "cosine"}}})
    assert merged["training"]["schedule"] == {"kind": "cosine", "milestones": [0.3], "gamma": 0.5}
    assert JobSpec.model_validate(merged).training.schedule.kind == "cosine"
