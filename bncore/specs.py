"""What a job asks for: the network, the dataset and the training run, with documented defaults.

These pydantic models are the contract shared by the API (request bodies) and the worker
(the stored spec it trains from).
"""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Activation = Literal["relu", "sigmoid", "tanh", "gelu", "elu", "selu"]
Width = Annotated[int, Field(ge=1, le=8192)]
Dim = Annotated[int, Field(ge=1, le=4096)]


class StrictModel(BaseModel):
    # Strict: a job says `true` and `3`, not `0` or `"3"`, as the schema it publishes says.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ModelSpec(StrictModel):
    architecture: Literal["mlp", "cnn"] = Field(
        description="`mlp`: Linear-BN-activation blocks; `cnn`: Conv-BN-activation blocks"
    )
    num_classes: int = Field(ge=2, le=10_000, description="outputs of the linear head; must match the dataset")
    input_shape: list[Dim] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="one sample's shape: [features] for mlp, [C, H, W] for cnn; default: the dataset's",
    )
    hidden_sizes: list[Width] = Field([100, 100, 100], max_length=32, description="mlp: width of each hidden layer")
    channels: list[Width] = Field([16, 32], min_length=1, max_length=16, description="cnn: channels of each conv block")
    kernel_size: Literal[1, 3, 5, 7] = Field(3, description="cnn: square kernel, padded to keep the size")
    activation: Activation = "relu"
    normalization: Literal["batchnorm", "none"] = "batchnorm"
    bn_position: Literal["before_activation", "after_activation"] = Field(
        "before_activation", description="where BN sits; the paper puts it before the non-linearity"
    )
    bn_momentum: float = Field(0.1, gt=0, le=1, description="PyTorch's convention: running = (1-m)·running + m·batch")
    bn_eps: float = Field(1e-5, gt=0, le=1)


def _is_none(value: object) -> bool:
    return value is None


class DatasetRef(StrictModel):
    """Exactly one of `name` (a built-in dataset) or `id` (an uploaded one)."""

    # Stored specs and answers carry only the key given: {"name": "digits"} or {"id": "ds_..."}.
    name: str | None = Field(
        None, min_length=1, max_length=100, exclude_if=_is_none, description="a built-in dataset, see GET /v1/datasets"
    )
    id: str | None = Field(
        None, min_length=1, max_length=64, exclude_if=_is_none, description="an uploaded dataset, see POST /v1/datasets"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> "DatasetRef":
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of `name` (a built-in dataset) or `id` (an uploaded dataset)")
        return self

    @property
    def field(self) -> str:
        """The request field that names this dataset, for errors about it."""
        return "dataset.id" if self.id is not None else "dataset.name"


class TrainingSpec(StrictModel):
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=2, le=65_536, description="at least 2: BN needs more than one value per feature")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(0.2, gt=0, le=0.5)
    mixed_precision: bool = Field(False, description="bf16 autocast for the forward pass; BN layers stay in fp32")
    time_limit_seconds: float | None = Field(
        None, gt=0, description="stop the job as `timeout` after this long; default and maximum: the service's limit"
    )


class RecalibrationRequest(StrictModel):
    dataset: DatasetRef | None = Field(
        None, description="data to measure; omitted: the model's own training split. Another dataset: AdaBN"
    )
    max_samples: int | None = Field(None, ge=2, le=10_000_000, description="a seeded random subset of this size")


class Recalibration(RecalibrationRequest):
    parent_model_id: str


class ResourcesSpec(StrictModel):
    device: Literal["gpu", "cpu", "any"] = Field(
        "any", description="which workers may take the job; `any` goes to the first free worker"
    )


class JobSpec(StrictModel):
    # Not part of what is trained: kept on the job record, never in the stored spec (exclude).
    name: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        exclude=True,
        description="a readable name for the job and its model; default e.g. `mlp-3x100-bn-digits`",
    )
    model: ModelSpec
    dataset: DatasetRef
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


def num_features(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape)
