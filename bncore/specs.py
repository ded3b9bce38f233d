"""What a job asks for: the network, the dataset and the training run, with documented defaults.

These pydantic models are the contract shared by the API (request bodies) and the worker
(the stored spec it trains from).
"""

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bncore.free_text import OneLine

Activation = Literal["relu", "sigmoid", "tanh", "gelu", "elu", "selu"]
Width = Annotated[int, Field(ge=1, le=8192)]
Dim = Annotated[int, Field(ge=1, le=4096)]
Init = Literal["default", "kaiming_normal", "xavier_normal", "normal"]
Normalization = Literal["batchnorm", "batch_renorm", "group_norm", "layer_norm", "none"]
BatchOrder = Literal["shuffled", "class_sorted", "grouped"]


class StrictModel(BaseModel):
    # Strict: a job says `true` and `3`, not `0` or `"3"`, as the schema it publishes says.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, use_attribute_docstrings=True)


class ModelSpec(StrictModel):
    architecture: Literal["mlp", "cnn", "resnet"]
    """`mlp`: Linear-BN-activation blocks; `cnn`: Conv-BN-activation blocks; `resnet`: a CIFAR-style residual network (He et al.
    2016)"""
    num_classes: int = Field(ge=2, le=10_000)
    """outputs of the linear head; must match the dataset"""
    input_shape: list[Dim] | None = Field(None, min_length=1, max_length=3)
    """one sample's shape: [features] for mlp, [C, H, W] for cnn and resnet; default: the dataset's"""
    hidden_sizes: list[Width] = Field([100, 100, 100], max_length=32)
    """mlp: width of each hidden layer"""
    channels: list[Width] = Field([16, 32], min_length=1, max_length=16)
    """cnn: channels of each conv block"""
    kernel_size: Literal[1, 3, 5, 7] = 3
    """cnn: square kernel, padded to keep the size"""
    depth: int = Field(20, ge=8, le=110)
    """resnet: 6n+2 weighted layers (8, 14, 20, 32, 44, 56, 110)"""
    width: Width = Field(16, le=512)
    """resnet: channels of the first stage, doubled at each of the other two"""
    zero_init_residual: bool = False
    """resnet: each block's last BN starts with γ = 0 (Goyal et al. 2017)"""
    dropout: float = Field(0.0, ge=0, lt=1)
    """mlp and cnn: the rate of a dropout layer after each hidden activation; 0: none"""
    init: Init = "default"
    """initial weights of every Linear/Conv2d: PyTorch's `default`, `kaiming_normal` (fan-in, ReLU gain), `xavier_normal`, or
    `normal` with `init_std`; biases start at 0 except with `default`"""
    init_std: float = Field(0.01, gt=0, le=10)
    """init `normal`: the standard deviation of the weights"""
    init_scale: float = Field(1.0, gt=0, le=100)
    """multiplies every initial Linear/Conv2d weight"""
    activation: Activation = "relu"
    normalization: Normalization = "batchnorm"
    """`batchnorm` (Ioffe & Szegedy 2015); `batch_renorm` (Ioffe 2017: BN corrected towards its moving averages in training, plain
    BN at inference); `group_norm` (Wu & He 2018, `groups` groups of channels per sample) and `layer_norm` (every channel of a
    sample): batch-independent, no running statistics; `none`"""
    renorm_r_max: float = Field(3.0, ge=1, le=100)
    """batch_renorm: the final bound on r = σ_B/σ"""
    renorm_d_max: float = Field(5.0, ge=0, le=100)
    """batch_renorm: the final bound on |d| = |μ_B − μ|/σ"""
    renorm_warmup_steps: int = Field(1000, ge=0, le=10_000_000)
    """batch_renorm: training steps of plain BN (r_max 1, d_max 0) before the bounds are relaxed linearly to renorm_r_max and
    renorm_d_max over as many steps again"""
    groups: int = Field(4, ge=1, le=8192)
    """group_norm: groups of channels (features, in an mlp); must divide every width"""
    bn_position: Literal["before_activation", "after_activation"] = "before_activation"
    """where BN sits; the paper puts it before the non-linearity"""
    bn_momentum: float = Field(0.1, gt=0, le=1)
    """PyTorch's convention: running = (1-m)·running + m·batch"""
    bn_eps: float = Field(1e-5, gt=0, le=1)
    bn_sync: Literal["global", "local"] | None = None
    """a data-parallel job's BN: `global` normalises with the statistics of the global batch, `local` with each process's share;
    default: `global` when the job runs on more than one process"""
    virtual_batch_size: int | None = Field(None, ge=2, le=65_536)
    """ghost BN (Hoffer et al. 2017): BN statistics over sub-batches of this size while training; at inference it is plain BN"""
    bias_before_bn: bool = False
    """mlp and cnn: keep the bias of each layer feeding BN; BN's mean subtraction cancels it, so its gradient is zero (the
    `bias-is-redundant` preset shows it)"""

    @field_validator("depth")
    @classmethod
    def _six_n_plus_two(cls, depth: int) -> int:
        if depth % 6 != 2:
            raise ValueError(f"a resnet has 6n+2 layers (8, 14, 20, 32, 44, 56, 110), got {depth}")
        return depth


def _is_none(value: object) -> bool:
    return value is None


class DatasetRef(StrictModel):
    """Exactly one of `name` (a built-in dataset) or `id` (an uploaded one)."""

    # Stored specs and answers carry only the key given: {"name": "digits"} or {"id": "ds_..."}.
    name: OneLine | None = Field(None, min_length=1, max_length=100, exclude_if=_is_none)
    """a built-in dataset, see GET /v1/datasets"""
    id: OneLine | None = Field(None, min_length=1, max_length=64, exclude_if=_is_none)
    """an uploaded dataset, see POST /v1/datasets"""

    @model_validator(mode="after")
    def _exactly_one(self) -> "DatasetRef":
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of `name` (a built-in dataset) or `id` (an uploaded dataset)")
        return self

    @property
    def field(self) -> str:
        """The request field that names this dataset, for errors about it."""
        return "dataset.id" if self.id is not None else "dataset.name"


Milestone = Annotated[float, Field(gt=0, lt=1)]


class ScheduleSpec(StrictModel):
    """How the learning rate moves over training; see docs/training-recipes.md."""

    kind: Literal["constant", "step", "exponential", "cosine"] = "constant"
    """`step`: × `gamma` at each milestone; `exponential`: × `gamma` per epoch; `cosine`: down to `min_lr`"""
    milestones: list[Milestone] = Field([0.5, 0.75], max_length=32)
    """step: where the rate decays, as fractions of training in (0, 1)"""
    gamma: float = Field(0.1, gt=0, le=1)
    """step and exponential: the factor of each decay"""
    min_lr: float = Field(0.0, ge=0, le=10)
    """cosine: the rate at the end of training"""
    warmup_epochs: int = Field(0, ge=0, le=1000)
    """a linear rise from near 0 to `learning_rate` over these epochs, before the schedule"""


class AugmentationSpec(StrictModel):
    """Image inputs only ([C, H, W]); training batches only, never validation or prediction."""

    random_crop_padding: int = Field(0, ge=0, le=64)
    """zero-pad each side by this much, then crop back at random"""
    horizontal_flip: bool = False
    """mirror half of the samples left to right"""


class EarlyStoppingSpec(StrictModel):
    patience: int = Field(ge=1, le=1000)
    """stop after this many epochs without a lower validation loss"""


class TrackActivationsSpec(StrictModel):
    """The paper's Figure 1(b, c): percentiles of the inputs to each tracked non-linearity while training."""

    layers: list[Annotated[str, Field(min_length=1, max_length=200)]] | Literal["all"] = "all"
    """activation modules by name, e.g. ["act1", "act3"], or "all" of them"""
    every_steps: int = Field(50, ge=1, le=1_000_000)
    """measure after every this many optimisation steps"""

    @field_validator("layers")
    @classmethod
    def _some_layers(cls, layers: list[str] | str) -> list[str] | str:
        if isinstance(layers, list) and not layers:
            raise ValueError('name at least one layer, or "all"')
        return layers


class TrainingSpec(StrictModel):
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=2, le=65_536)
    """at least 2: BN needs more than one value per feature"""
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    """sgd only"""
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(0.2, gt=0, le=0.5)
    mixed_precision: bool = False
    """bf16 autocast for the forward pass; BN layers stay in fp32"""
    time_limit_seconds: float | None = Field(None, gt=0)
    """stop the job as `timeout` after this long; default and maximum: the service's limit"""
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    """the learning-rate schedule"""
    augmentation: AugmentationSpec | None = None
    """random crops and flips of training images"""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """CrossEntropyLoss's label_smoothing, in training only"""
    grad_clip_norm: float | None = Field(None, gt=0)
    """clip the gradients' total L2 norm to this"""
    early_stopping: EarlyStoppingSpec | None = None
    """on validation loss; the model kept is the best epoch's, named by the job's `best_epoch`"""
    track_activations: TrackActivationsSpec | None = None
    """record the 15th, 50th and 85th percentiles (and mean and std) of the inputs to each tracked non-linearity on a fixed probe
    batch, see GET /v1/jobs/{id}/activations"""
    batch_order: BatchOrder = "shuffled"
    """`shuffled`: i.i.d. batches; `class_sorted`: one class after another, shuffled within each; `grouped`: each batch drawn from
    `batch_group_size` classes only (non-i.i.d. batches, Ioffe 2017)"""
    batch_group_size: int = Field(2, ge=1, le=10_000)
    """grouped: the classes each batch is drawn from"""


class RecalibrationRequest(StrictModel):
    dataset: DatasetRef | None = None
    """data to measure; omitted: the model's own training split. Another dataset: AdaBN"""
    max_samples: int | None = Field(None, ge=2, le=10_000_000)
    """a seeded random subset of this size"""


class Recalibration(RecalibrationRequest):
    parent_model_id: str


class ResourcesSpec(StrictModel):
    device: Literal["gpu", "cpu", "any"] = "any"
    """which workers may take the job; `any` goes to the first free worker"""
    processes: int = Field(1, ge=1, le=64)
    """data-parallel processes per worker (one per GPU on CUDA); each takes a share of the batch"""
    workers: int = Field(1, ge=1, le=64)
    """workers the job spans, each running `processes` processes of one gang"""

    @property
    def world_size(self) -> int:
        """Processes over all workers: what the global batch is shared by."""
        return self.processes * self.workers


class JobSpec(StrictModel):
    # Not part of what is trained: kept on the job record, never in the stored spec (exclude).
    name: str | None = Field(None, min_length=1, max_length=100, exclude=True)
    """a readable name for the job and its model; default e.g. `mlp-3x100-bn-digits`"""
    model: ModelSpec
    dataset: DatasetRef
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)


def num_features(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape)
