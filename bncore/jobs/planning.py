"""Check a job spec against its dataset and the service's limits before it is queued."""

import math

import torch

from bncore.data.builtin import DatasetInfo, split_indices
from bncore.data.catalog import BUILT_INS, DatasetCatalog
from bncore.errors import InvalidField
from bncore.naming import default_name
from bncore.specs import JobSpec, num_features
from bncore.training.activations import activation_layer_names, unknown_layers
from bncore.training.networks import build_network, parameter_count
from bncore.training.normalization import normalised_widths


def _cnn_shape_hint(features: int) -> str:
    side = math.isqrt(features)
    return f", e.g. [1, {side}, {side}]" if side * side == features else ""


def _check_recipe(spec: JobSpec, shape: list[int]) -> None:
    """What the training spec cannot check alone: fields that depend on each other or on the data."""
    training = spec.training
    if training.schedule.warmup_epochs > training.epochs:
        raise InvalidField(
            "training.schedule.warmup_epochs",
            f"a warm-up of {training.schedule.warmup_epochs} epochs is longer than training ({training.epochs} epochs)",
        )
    if training.schedule.kind == "cosine" and training.schedule.min_lr > training.learning_rate:
        raise InvalidField(
            "training.schedule.min_lr",
            f"a cosine schedule goes down to min_lr: at most training.learning_rate ({training.learning_rate:g})",
        )
    if training.augmentation is not None and len(shape) != 3:
        raise InvalidField(
            "training.augmentation",
            f"crops and flips need image inputs shaped [C, H, W]; this job's inputs are {shape}",
        )


def _check_parallelism(spec: JobSpec) -> None:
    """Each process takes an equal share of the global batch; ghost BN is a one-process option."""
    resources, batch_size, model = spec.resources, spec.training.batch_size, spec.model
    world_size = resources.world_size
    if batch_size % world_size != 0:
        raise InvalidField(
            "training.batch_size",
            f"the global batch of {batch_size} does not divide among {world_size} processes: expected a multiple of {world_size}",
        )
    if model.normalization == "batchnorm" and batch_size // world_size < 2:
        raise InvalidField(
            "training.batch_size",
            f"each of {world_size} processes would hold {batch_size // world_size} sample(s) of a batch; BN needs at least 2: "
            f"expected at least {2 * world_size}",
        )
    if model.virtual_batch_size is not None:
        if model.normalization != "batchnorm":
            raise InvalidField("model.virtual_batch_size", "ghost batches need BN layers: expected normalization 'batchnorm'")
        if world_size > 1:
            raise InvalidField("model.virtual_batch_size", "ghost BN runs on one process: expected resources.processes 1")
        if model.virtual_batch_size > batch_size:
            raise InvalidField(
                "model.virtual_batch_size", f"a virtual batch is a part of the batch: at most training.batch_size ({batch_size})"
            )


def _check_resnet(spec: JobSpec) -> None:
    """What a residual network cannot do: its blocks fix where BN sits, and they have no dropout."""
    if spec.model.architecture != "resnet":
        return
    if spec.model.bn_position != "before_activation":
        raise InvalidField("model.bn_position", "a resnet puts BN before the activation: expected 'before_activation'")
    if spec.model.dropout > 0:
        raise InvalidField("model.dropout", "a resnet has no dropout layers: expected 0 (dropout applies to mlp and cnn)")
    if spec.model.bias_before_bn:
        raise InvalidField("model.bias_before_bn", "a resnet's convolutions have no bias: expected false (mlp and cnn only)")


def _check_bias_before_bn(spec: JobSpec) -> None:
    model = spec.model
    if model.bias_before_bn and (model.normalization != "batchnorm" or model.bn_position != "before_activation"):
        raise InvalidField(
            "model.bias_before_bn",
            "keeps the bias of layers feeding BN: it needs normalization 'batchnorm' with bn_position 'before_activation' "
            "(without them every layer has its bias already)",
        )


def _check_tracked_layers(spec: JobSpec) -> None:
    """Every layer `training.track_activations` names is a non-linearity of the network built."""
    tracking = spec.training.track_activations
    if tracking is None:
        return
    shape = tuple(spec.model.input_shape or ())
    with torch.device("meta"):
        network = build_network(spec.model, shape)
    unknown = unknown_layers(network, tracking)
    if unknown:
        raise InvalidField(
            "training.track_activations.layers",
            f"no activation layer named {', '.join(map(repr, unknown))}; this network has "
            f'{", ".join(activation_layer_names(network))} (or "all")',
        )


def _check_groups(spec: JobSpec) -> None:
    """GroupNorm splits each normalised layer's channels (an mlp's features) into `groups` equal groups."""
    if spec.model.normalization != "group_norm":
        return
    widths = normalised_widths(spec.model)
    uneven = sorted({width for width in widths if width % spec.model.groups})
    if uneven:
        raise InvalidField(
            "model.groups",
            f"group_norm splits each normalised layer's channels into {spec.model.groups} equal groups, but "
            f"{uneven} are not divisible by {spec.model.groups}: expected a divisor of every width {sorted(set(widths))}",
        )


IMAGE_ARCHITECTURES = ("cnn", "resnet")


def default_input_shape(architecture: str, info: DatasetInfo) -> list[int]:
    """The dataset's sample shape; a cnn or resnet takes its image shape where the dataset knows one."""
    if architecture in IMAGE_ARCHITECTURES and info.image_shape is not None:
        return list(info.image_shape)
    return list(info.input_shape)


def plan_job(
    spec: JobSpec,
    max_parameters: int,
    max_sample_epochs: int,
    max_seconds: float = math.inf,
    datasets: DatasetCatalog = BUILT_INS,
) -> JobSpec:
    """The spec with `model.input_shape` (for a cnn, the dataset's image shape) and `name` filled in from
    the dataset; InvalidField names what is wrong."""
    info = datasets.info(spec.dataset)
    features = num_features(info.input_shape)
    shape = spec.model.input_shape or default_input_shape(spec.model.architecture, info)
    if spec.model.architecture in IMAGE_ARCHITECTURES and len(shape) != 3:
        raise InvalidField(
            "model.input_shape",
            f"a {spec.model.architecture} takes images: it needs [C, H, W] with C·H·W = {features} "
            f"(dataset '{info.name}' has {features} features)" + _cnn_shape_hint(features),
        )
    _check_resnet(spec)
    _check_parallelism(spec)
    _check_bias_before_bn(spec)
    _check_groups(spec)
    if num_features(shape) != features:
        raise InvalidField(
            "model.input_shape",
            f"{shape} holds {num_features(shape)} values but dataset '{info.name}' has {features} features per sample",
        )
    if spec.model.num_classes != info.num_classes:
        raise InvalidField(
            "model.num_classes", f"dataset '{info.name}' has {info.num_classes} classes, got {spec.model.num_classes}"
        )
    if spec.training.time_limit_seconds is not None and spec.training.time_limit_seconds > max_seconds:
        raise InvalidField("training.time_limit_seconds", f"at most {max_seconds:g} s, this service's limit per job")
    train_samples = len(split_indices(info.num_samples, spec.training.validation_fraction, spec.training.seed)[0])
    if spec.training.epochs * train_samples > max_sample_epochs:
        raise InvalidField(
            "training.epochs",
            f"{spec.training.epochs} epochs × {train_samples} training samples exceeds this service's limit of "
            f"{max_sample_epochs:,} sample-epochs per job",
        )
    _check_recipe(spec, shape)
    bn_sync = spec.model.bn_sync or ("global" if spec.resources.world_size > 1 else None)
    planned = spec.model_copy(update={"model": spec.model.model_copy(update={"input_shape": shape, "bn_sync": bn_sync})})
    planned = planned.model_copy(update={"name": spec.name or default_name(planned.model_dump(mode="json"), info.name)})
    _check_tracked_layers(planned)
    count = parameter_count(planned.model, tuple(shape))
    if count > max_parameters:
        raise InvalidField("model", f"the network has {count:,} parameters; this service allows at most {max_parameters:,}")
    return planned
