"""Recalibration jobs: a model's BN statistics recomputed over data, stored as a new model version."""

from collections.abc import Callable

import torch

from bncore.bn.kinds import no_statistics_reason
from bncore.bn.population_statistics import recalibrated
from bncore.data.builtin import prepare_data, raw_samples, split_indices
from bncore.data.catalog import BUILT_INS, DatasetCatalog
from bncore.errors import InvalidField
from bncore.specs import JobSpec, Recalibration, RecalibrationRequest, num_features
from bncore.training.loop import evaluate
from bncore.training.trained_model import TrainedModel


def check_recalibration(model_spec: JobSpec, request: RecalibrationRequest, datasets: DatasetCatalog = BUILT_INS) -> None:
    """InvalidField when the model has no running statistics, the data cannot feed it, or the model's own data
    (its validation split) is gone."""
    reason = no_statistics_reason(model_spec.model.normalization)
    if reason is not None:
        raise InvalidField("model_id", f"recalibration recomputes running statistics: {reason}, nothing to recalibrate")
    try:
        datasets.info(model_spec.dataset)
    except InvalidField:
        raise InvalidField(
            "model_id",
            f"the model was trained on dataset '{model_spec.dataset.id}', which was deleted: its validation split, "
            "which scores the recalibrated model, is gone",
        ) from None
    if request.dataset is None:
        return
    info = datasets.info(request.dataset)
    expected = num_features(model_spec.model.input_shape or [])
    if num_features(info.input_shape) != expected:
        raise InvalidField(
            request.dataset.field,
            f"dataset '{info.name}' has {num_features(info.input_shape)} features per sample; the model takes {expected}",
        )


def recalibration_inputs(spec: JobSpec, recalibration: Recalibration, datasets: DatasetCatalog = BUILT_INS) -> torch.Tensor:
    """Raw samples to measure: the model's training split, or all of another dataset; a seeded subset if asked."""
    input_shape = tuple(spec.model.input_shape or ())
    if recalibration.dataset is None:
        dataset = datasets.load(spec.dataset)
        train, _ = split_indices(dataset.info.num_samples, spec.training.validation_fraction, spec.training.seed)
        inputs = raw_samples(dataset, input_shape, train)
    else:
        inputs = raw_samples(datasets.load(recalibration.dataset), input_shape)
    if recalibration.max_samples is not None and recalibration.max_samples < len(inputs):
        subset = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(spec.training.seed))
        inputs = inputs[subset[: recalibration.max_samples]]
    return inputs


def recalibrate(
    parent: TrainedModel,
    recalibration: Recalibration,
    datasets: DatasetCatalog = BUILT_INS,
    interrupt: Callable[[], None] = lambda: None,
) -> tuple[TrainedModel, dict[str, float]]:
    """The recalibrated model, and its loss and accuracy on the parent's validation split.

    `interrupt` is called between batches, as in training: it stops a cancelled or timed-out job.
    """
    inputs = recalibration_inputs(parent.spec, recalibration, datasets)
    interrupt()
    model = recalibrated(parent, inputs, interrupt)
    spec = parent.spec
    data = prepare_data(datasets.load(spec.dataset), parent.input_shape, spec.training.validation_fraction, spec.training.seed)
    val_loss, val_accuracy = evaluate(model.network, data.x_val, data.y_val)
    return model, {"val_loss": val_loss, "val_accuracy": val_accuracy}
