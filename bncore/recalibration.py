"""Recalibration jobs: a model's BN statistics recomputed over data, stored as a new model version."""

import torch

from bncore.datasets import load_dataset, prepare_data, raw_samples, split_indices
from bncore.errors import InvalidField
from bncore.population_statistics import recalibrated
from bncore.specs import JobSpec, Recalibration, RecalibrationRequest, num_features
from bncore.trained_model import TrainedModel
from bncore.training import evaluate


def check_recalibration(model_spec: JobSpec, request: RecalibrationRequest) -> None:
    """InvalidField when the data cannot feed the model."""
    if request.dataset is None:
        return
    info = load_dataset(request.dataset.name).info
    expected = num_features(model_spec.model.input_shape or [])
    if num_features(info.input_shape) != expected:
        raise InvalidField(
            "dataset.name",
            f"dataset '{info.name}' has {num_features(info.input_shape)} features per sample; the model takes {expected}",
        )


def recalibration_inputs(spec: JobSpec, recalibration: Recalibration) -> torch.Tensor:
    """Raw samples to measure: the model's training split, or all of another dataset; a seeded subset if asked."""
    input_shape = tuple(spec.model.input_shape or ())
    if recalibration.dataset is None:
        dataset = load_dataset(spec.dataset.name)
        train, _ = split_indices(dataset.info.num_samples, spec.training.validation_fraction, spec.training.seed)
        inputs = raw_samples(dataset, input_shape, train)
    else:
        inputs = raw_samples(load_dataset(recalibration.dataset.name), input_shape)
    if recalibration.max_samples is not None and recalibration.max_samples < len(inputs):
        subset = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(spec.training.seed))
        inputs = inputs[subset[:recalibration.max_samples]]
    return inputs


def recalibrate(parent: TrainedModel, recalibration: Recalibration) -> tuple[TrainedModel, dict[str, float]]:
    """The recalibrated model, and its loss and accuracy on the parent's validation split."""
    model = recalibrated(parent, recalibration_inputs(parent.spec, recalibration))
    spec = parent.spec
    data = prepare_data(
        load_dataset(spec.dataset.name), parent.input_shape, spec.training.validation_fraction, spec.training.seed
    )
    val_loss, val_accuracy = evaluate(model.network, data.x_val, data.y_val)
    return model, {"val_loss": val_loss, "val_accuracy": val_accuracy}
