"""Row 10: what `training.track_activations` costs a job at its default `every_steps`, against the same job without it."""

import time

import torch

from bench.report import Row, ratio_row
from bncore.data.builtin import load_dataset, prepare_data
from bncore.specs import ModelSpec, TrackActivationsSpec, TrainingSpec
from bncore.training.loop import train
from bncore.training.networks import build_network

TARGET = 1.05  # at most 5 % more time
MODEL = ModelSpec(architecture="mlp", num_classes=10, activation="sigmoid", hidden_sizes=[100, 100, 100])


def _seconds(training: TrainingSpec) -> float:
    data = prepare_data(load_dataset("digits"), (64,), training.validation_fraction, training.seed)
    torch.manual_seed(training.seed)
    network = build_network(MODEL, (64,))
    started = time.perf_counter()
    train(network, data, training)
    return time.perf_counter() - started


def measure(epochs: int, rounds: int) -> Row:
    plain = TrainingSpec(epochs=epochs, batch_size=64)
    tracked = plain.model_copy(update={"track_activations": TrackActivationsSpec()})
    _seconds(plain)  # warm-up: the process's first training pays for one-off set-up, a second or more
    with_tracking, without = [], []
    for round_ in range(rounds):  # in turns, each first every other round, so that a busy moment falls on both alike
        for spec in (tracked, plain) if round_ % 2 else (plain, tracked):
            (with_tracking if spec is tracked else without).append(_seconds(spec))
    return ratio_row(
        f"10. activation tracking, digits sigmoid MLP 3×100, every {tracked.track_activations.every_steps} steps (vs none)",
        min(with_tracking),
        min(without),
        "s",
        TARGET,
        higher_is_better=False,
        note=f"{epochs} epochs in process, best of {rounds} each, in turns; all three layers tracked on a probe batch of "
        "256 samples",
    )
