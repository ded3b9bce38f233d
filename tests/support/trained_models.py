"""Models trained in-process, for tests of the domain that need real BN statistics but no HTTP."""

from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from sklearn.datasets import load_digits

from bncore.jobs.execution import train_model
from bncore.jobs.planning import plan_job
from bncore.specs import JobSpec
from bncore.training.trained_model import TrainedModel

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {"architecture": "mlp", "hidden_sizes": [32, 32]},
    "cnn": {"architecture": "cnn", "input_shape": [1, 8, 8], "channels": [8, 16]},
    "after_activation": {"architecture": "mlp", "hidden_sizes": [32, 32], "bn_position": "after_activation"},
    "no_batchnorm": {"architecture": "mlp", "hidden_sizes": [32, 32], "normalization": "none"},
    "resnet": {"architecture": "resnet", "input_shape": [1, 8, 8], "depth": 8, "width": 8},
}
# Every BN layer of the resnet above, in the order the forward pass reaches them: stem, then per block
# bn1, bn2 and, where the block changes the shape, the shortcut projection's BN.
RESNET8_BATCHNORMS = [
    "bn1",
    "stage1.0.bn1",
    "stage1.0.bn2",
    "stage2.0.bn1",
    "stage2.0.bn2",
    "stage2.0.shortcut.bn",
    "stage3.0.bn1",
    "stage3.0.bn2",
    "stage3.0.shortcut.bn",
]


def train_digits(model: dict[str, Any], epochs: int = 2) -> TrainedModel:
    """A digits model as a job would train it, on the CPU."""
    spec = plan_job(
        JobSpec.model_validate(
            {
                "model": {"num_classes": 10, **model},
                "dataset": {"name": "digits"},
                "training": {"epochs": epochs},
            }
        ),
        max_parameters=10**7,
        max_sample_epochs=10**9,
    )
    trained, _ = train_model(spec, torch.device("cpu"))
    return trained


def digits_inputs(model: TrainedModel) -> torch.Tensor:
    """Every digits sample in raw units, shaped for the model."""
    return torch.from_numpy(load_digits().data).float().reshape(-1, *model.input_shape)


def from_artifact(payload: bytes, spec: dict[str, Any]) -> TrainedModel:
    """The training-form model from a downloaded safetensors file and the spec `GET /v1/models/{id}` shows."""
    return TrainedModel.from_tensors(JobSpec.model_validate(spec), load_safetensors(payload))
