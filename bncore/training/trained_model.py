"""A trained network together with the input standardisation it was trained with."""

import json
from dataclasses import dataclass

import torch
from torch import nn

from bncore.specs import JobSpec
from bncore.training.networks import build_network

FORMAT = "bnjobs.model/1"
NETWORK_PREFIX = "network."


@dataclass(frozen=True)
class Prediction:
    logits: torch.Tensor
    probabilities: torch.Tensor
    classes: torch.Tensor

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "Prediction":
        probabilities = torch.softmax(logits, dim=1)
        return cls(logits, probabilities, probabilities.argmax(dim=1))

    def tolist(self) -> "PredictionLists":
        return PredictionLists(self.logits.tolist(), self.probabilities.tolist(), self.classes.tolist())


@dataclass(frozen=True)
class PredictionLists:
    """A prediction as plain Python lists, the values a JSON answer holds."""

    logits: list[list[float]]
    probabilities: list[list[float]]
    classes: list[int]

    def rows(self, start: int, stop: int) -> "PredictionLists":
        return PredictionLists(self.logits[start:stop], self.probabilities[start:stop], self.classes[start:stop])


class Standardize(nn.Module):
    """Per-feature (x − mean) / std with the training split's statistics, as a layer of the served graph."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass
class TrainedModel:
    spec: JobSpec  # planned: model.input_shape is filled in
    network: nn.Module
    input_mean: torch.Tensor
    input_std: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, ...]:
        assert self.spec.model.input_shape is not None
        return tuple(self.spec.model.input_shape)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Weights, γ, β and BN buffers (running_mean, running_var, num_batches_tracked) plus standardisation."""
        tensors = {NETWORK_PREFIX + name: value for name, value in self.network.state_dict().items()}
        tensors["input.mean"] = self.input_mean
        tensors["input.std"] = self.input_std
        return tensors

    def metadata(self) -> dict[str, str]:
        return {"format": FORMAT, "spec": self.spec.model_dump_json()}

    @classmethod
    def from_tensors(cls, spec: JobSpec, tensors: dict[str, torch.Tensor]) -> "TrainedModel":
        """Rebuild from a spec and stored tensors (never a pickle), ready for inference in eval mode."""
        network = build_network(spec.model, tuple(spec.model.input_shape or ()))
        state = {name[len(NETWORK_PREFIX) :]: value for name, value in tensors.items() if name.startswith(NETWORK_PREFIX)}
        network.load_state_dict(state, strict=True)
        network.eval()
        return cls(spec=spec, network=network, input_mean=tensors["input.mean"], input_std=tensors["input.std"])

    @torch.inference_mode()
    def predict(self, raw_inputs: torch.Tensor) -> Prediction:
        """Eval mode: every BN layer uses its frozen running statistics, so a row's answer ignores its batch."""
        self.network.eval()
        return Prediction.from_logits(self.network((raw_inputs - self.input_mean) / self.input_std))


def spec_from_metadata(metadata: dict[str, str]) -> JobSpec:
    return JobSpec.model_validate(json.loads(metadata["spec"]))
