"""Response bodies of the API. Request bodies are the domain's specs (bncore.specs)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from bncore.advice import spec_warnings
from bncore.specs import JobSpec, Recalibration

if TYPE_CHECKING:  # the SDK and the CLI import these models: they must load without torch or a database
    from bncore.bn.layers import BatchNormLayer
    from bncore.data.builtin import DatasetInfo
    from bncore.serving.drift import DriftReport
    from bncore.storage.dataset_store import DatasetRecord
    from bncore.storage.job_store import JobRecord
    from bncore.storage.model_store import ModelRecord
    from bncore.training.epoch_metrics import EpochMetrics
    from bncore.training.trained_model import PredictionLists


def _is_none(value: object) -> bool:
    return value is None


def same_named(record: object, schema: type[BaseModel]) -> dict[str, Any]:
    """The record's values of the fields `schema` declares under the same name: what the API shows as stored.
    Only declared fields are read, so a record's internal fields (its owner) never reach a response."""
    return {name: getattr(record, name) for name in schema.model_fields if hasattr(record, name)}


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. `training.epochs`")
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []
    request_id: str | None = Field(None, description="the `X-Request-ID` of the request, as in the service's log")


class ErrorOut(BaseModel):
    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    401: "no API key, or an unknown one (API keys are configured)",
    403: "the API key lacks the scope this needs",
    404: "no such job, model or dataset, or not the caller's",
    409: "the request conflicts with the job's state, or reuses an Idempotency-Key for another body",
    413: "the request body, the rows in it, or the uploaded file, exceed this service's limit",
    415: "the body is not application/json (multipart/form-data for an upload)",
    422: "a value this request may not have; `fields` names the ones at fault",
    429: "too many job submissions a minute; retry after Retry-After seconds",
    503: "the job queue, or the model's stored weights, are unavailable",
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {
        "Retry-After": {
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "description": "seconds to wait",
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route can answer with, all in the one `ErrorOut` shape."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[status]}
        if status in ERROR_HEADERS:
            responses[status]["headers"] = ERROR_HEADERS[status]
    return responses


class JobError(BaseModel):
    code: str = Field(description="e.g. `diverged`, `internal_error`")
    message: str


class Progress(BaseModel):
    epoch: int = Field(description="epochs finished so far")
    epochs: int


class FinalMetricsOut(BaseModel):
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float | None = Field(
        None,
        description="the rate the epoch's first step used (a schedule may change it every step); null for epochs "
        "recorded before the service had schedules",
    )


class EpochMetricsOut(FinalMetricsOut):
    seconds: float = Field(
        description="wall-clock time of the epoch's training and validation passes; 0 for epochs recorded before "
        "the service timed them"
    )

    @classmethod
    def from_metrics(cls, metrics: EpochMetrics) -> EpochMetricsOut:
        return cls(**{name: value for name, value in metrics.__dict__.items() if name != "activations"})


class ActivationLayerOut(BaseModel):
    name: str = Field(description="the activation module, e.g. `act1`")
    steps: list[int] = Field(description="the optimisation steps measured at; 0: before the first")
    p15: list[float] = Field(description="15th percentile of the inputs to the non-linearity, one per step")
    p50: list[float]
    p85: list[float]
    mean: list[float]
    std: list[float]


class ActivationsOut(BaseModel):
    layers: list[ActivationLayerOut] = Field(
        description="one per tracked layer; empty for a job without `training.track_activations` or before its first probe"
    )


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    id: str
    name: str = Field(description="the name given at submission, or one made from the spec, e.g. `mlp-3x100-bn-digits`")
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    metrics: list[EpochMetricsOut]
    model_id: str | None
    error: JobError | None
    device: str | None = Field(description="where the job trains, e.g. `cpu` or `cuda:0`")
    worker: str | None = Field(description="the Celery worker that took the job")
    workers: list[str] = Field(
        [],
        description="the workers of its attempt under way, or of its last one (none while queued), the one in `worker` "
        "first; several for a job spanning `resources.workers` workers (those that joined so far, while it gathers them)",
    )
    devices: list[str] = Field([], description="each of `workers`' device, in the same order")
    attempts: int = Field(
        description="times a worker took the job; more than 1 after a worker was lost, or after a job spanning "
        "several workers went back to the queue for want of free ones"
    )
    world_size: int = Field(1, description="processes that train the job together (processes × workers); 1: no data parallelism")
    resumed_from_epoch: int | None = Field(description="the checkpoint the last attempt went on from, if any")
    best_epoch: int | None = Field(
        None, description="under `training.early_stopping`: the epoch whose weights the model holds; null otherwise"
    )
    cancel_requested: bool
    spec: JobSpec = Field(description="what is trained; for a recalibration job, the parent model's spec")
    recalibration: Recalibration | None = Field(description="set for jobs that recompute a model's BN statistics")
    warnings: list[str] = Field(
        [],
        description="advice on the spec, never an error: e.g. BN with a batch under 8, or class-sorted batches, "
        "and the options that help (docs/training-recipes.md)",
    )

    @classmethod
    def from_record(cls, job: JobRecord) -> JobOut:
        spec = JobSpec.model_validate(job.spec)
        computed = {
            "progress": Progress(epoch=job.epoch, epochs=job.epochs),
            "metrics": [EpochMetricsOut.from_metrics(m) for m in job.metrics],
            "error": JobError(code=job.error.code, message=job.error.message) if job.error else None,
            "spec": spec,
            "recalibration": Recalibration.model_validate(job.recalibration) if job.recalibration else None,
            "warnings": [] if job.recalibration else spec_warnings(spec),
        }
        return cls(**{**same_named(job, cls), **computed})


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class DatasetOut(BaseModel):
    name: str = Field(description="a built-in's name (jobs name it as `dataset.name`), or an upload's label")
    description: str
    input_shape: list[int]
    num_classes: int
    num_samples: int
    source: Literal["builtin", "upload"]
    id: str | None = Field(None, description="an upload's id (jobs name it as `dataset.id`); null for built-ins")
    sha256: str | None = Field(None, description="an upload: sha256 of its stored samples, checked on every load")
    format: Literal["csv", "npz"] | None = Field(None, description="an upload: the format it was uploaded in")
    created_at: datetime | None = None

    @classmethod
    def from_info(cls, info: DatasetInfo) -> DatasetOut:
        return cls(**{**info.__dict__, "input_shape": list(info.input_shape)}, source="builtin")

    @classmethod
    def from_record(cls, record: DatasetRecord) -> DatasetOut:
        return cls(**{**same_named(record, cls), "input_shape": list(record.input_shape), "source": "upload"})


class DatasetList(BaseModel):
    items: list[DatasetOut]


class ServingOut(BaseModel):
    folded: bool = Field(description="whether the served graph has BN layers merged into the layer before them")
    folded_layers: list[str] = Field(description="the BN layers merged away, e.g. `bn1`")
    note: str | None = Field(
        None,
        exclude_if=_is_none,
        description="only where folding does not apply (group_norm, layer_norm, none: no running statistics): why",
    )


class ModelOut(BaseModel):
    id: str
    name: str = Field(description="its job's name")
    job_id: str
    created_at: datetime
    spec: JobSpec
    dataset: str = Field(description="the built-in dataset's name, or the uploaded dataset's id")
    input_shape: list[int]
    num_classes: int
    final_metrics: FinalMetricsOut = Field(
        description="the losses and accuracies of the epoch whose weights the model holds: the last, or the job's `best_epoch`"
    )
    parameter_count: int
    artifact_sha256: str = Field(description="sha256 of the stored safetensors file, checked on every load")
    parent_id: str | None = Field(description="the model this one was recalibrated from, if any")
    serving: ServingOut

    @classmethod
    def from_record(cls, model: ModelRecord, fold_batchnorm: bool) -> ModelOut:
        from bncore.bn.folding import folded_layer_names  # imports torch, which API clients need not load
        from bncore.bn.kinds import folding_note

        folded = folded_layer_names(model.spec.model, fold_batchnorm)
        computed = {
            "dataset": model.spec.dataset.name or str(model.spec.dataset.id),
            "input_shape": model.spec.model.input_shape or [],
            "num_classes": model.spec.model.num_classes,
            "final_metrics": FinalMetricsOut(**model.final_metrics),
            "serving": ServingOut(folded=bool(folded), folded_layers=folded, note=folding_note(model.spec.model.normalization)),
        }
        return cls(**{**same_named(model, cls), **computed})


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


class BatchNormLayerOut(BaseModel):
    name: str
    kind: Literal["batchnorm", "batch_renorm", "group_norm", "layer_norm"] = Field(
        "batchnorm", description="`batchnorm` and `batch_renorm` keep running statistics; the others have none"
    )
    num_features: int
    eps: float
    momentum: float | None
    gamma: list[float]
    beta: list[float]
    running_mean: list[float] | None = Field(description="null for group_norm and layer_norm: no running statistics")
    running_var: list[float] | None = Field(description="null for group_norm and layer_norm: no running statistics")
    num_batches_tracked: int | None = Field(description="null for group_norm and layer_norm")
    groups: int | None = Field(
        None, exclude_if=_is_none, description="only for group_norm (its groups of channels) and layer_norm (1)"
    )
    note: str | None = Field(
        None, exclude_if=_is_none, description="only for a layer without running statistics: why it has none"
    )

    @classmethod
    def from_layer(cls, layer: BatchNormLayer) -> BatchNormLayerOut:
        from bncore.bn.kinds import no_statistics_reason

        return cls(**layer.__dict__, note=no_statistics_reason(layer.kind))


class BatchNormOut(BaseModel):
    model_id: str
    layers: list[BatchNormLayerOut]


class DriftThresholdsOut(BaseModel):
    mean_shift: float = Field(description="a layer drifts when its mean_shift is above this...")
    variance_ratio_min: float = Field(description="...or its variance_ratio is below this...")
    variance_ratio_max: float = Field(description="...or above this")
    min_samples: int = Field(description="no layer is flagged before the model has served this many samples")


class LayerDriftOut(BaseModel):
    name: str
    samples: int = Field(description="samples this layer has seen since the model was loaded")
    mean_shift: float | None = Field(
        description="mean over features of |μ_serve − μ_train| / σ_train, with BN's frozen running statistics; "
        "null before any sample"
    )
    variance_ratio: float | None = Field(
        description="mean over features of σ²_serve / σ²_train, each with BN's ε added; null before any sample"
    )
    drifted: bool


class DriftOut(BaseModel):
    model_id: str
    since: datetime = Field(description="when this process loaded the model; the statistics count from then")
    samples_seen: int
    thresholds: DriftThresholdsOut
    drifted: bool = Field(description="whether any BN layer drifted")
    layers: list[LayerDriftOut] = Field(description="per BN layer, from the inputs it sees at serving time")
    applies: bool = Field(True, description="false for models without running statistics (group_norm, layer_norm, none)")
    note: str | None = Field(None, description="why drift monitoring does not apply, where it does not")

    @classmethod
    def from_report(cls, model_id: str, report: DriftReport, note: str | None = None) -> DriftOut:
        return cls(
            applies=note is None,
            note=note,
            model_id=model_id,
            since=report.since,
            samples_seen=report.samples_seen,
            thresholds=DriftThresholdsOut(
                mean_shift=report.thresholds.mean_shift_threshold,
                variance_ratio_min=report.thresholds.variance_ratio_min,
                variance_ratio_max=report.thresholds.variance_ratio_max,
                min_samples=report.thresholds.min_samples,
            ),
            drifted=report.drifted,
            layers=[LayerDriftOut.model_validate(layer, from_attributes=True) for layer in report.layers],
        )


JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    "digits": {
        "summary": "an MLP on digits, the rest left to its defaults",
        "value": {"model": {"architecture": "mlp", "num_classes": 10}, "dataset": {"name": "digits"}, "training": {"epochs": 10}},
    },
    "recipe": {
        "summary": "a CNN on digits as 1×8×8 images: warm-up, step decay, crops, label smoothing, early stopping",
        "value": {
            "model": {"architecture": "cnn", "num_classes": 10, "input_shape": [1, 8, 8]},
            "dataset": {"name": "digits"},
            "training": {
                "epochs": 12,
                "learning_rate": 0.2,
                "schedule": {"kind": "step", "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 1},
                "augmentation": {"random_crop_padding": 1, "horizontal_flip": False},
                "label_smoothing": 0.1,
                "grad_clip_norm": 5.0,
                "early_stopping": {"patience": 3},
            },
        },
    },
}
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        description="samples, each shaped as the model's input_shape, in raw (unstandardised) units",
        examples=[[[5.1, 3.5, 1.4, 0.2]]],
    )


class PredictOut(BaseModel):
    model_id: str
    outputs: list[list[float]] = Field(description="logits, one row per sample")
    probabilities: list[list[float]]
    predictions: list[int] = Field(description="the most probable class of each sample")

    @classmethod
    def of(cls, model_id: str, prediction: PredictionLists) -> PredictOut:
        """Not validated again: the values come straight from float and integer tensors."""
        return cls.model_construct(**_predict_out_fields(model_id, prediction))

    @staticmethod
    def json_of(model_id: str, prediction: PredictionLists) -> bytes:
        """The JSON of `of(...)` as the route sends it, at a third of the cost: no model is built."""
        return to_json(_predict_out_fields(model_id, prediction), inf_nan_mode="null")


def _predict_out_fields(model_id: str, prediction: PredictionLists) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "outputs": prediction.logits,
        "probabilities": prediction.probabilities,
        "predictions": prediction.classes,
    }


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unready"]
    checks: dict[str, bool]


class VariantOut(BaseModel):
    name: str
    job_id: str
    status: JobStatus
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    epochs_to_target: int | None = Field(description="first epoch whose validation accuracy reached the target")
    diverged: bool


class ClaimOut(BaseModel):
    statement: str = Field(description="the claim the preset reproduces, as this service tests it")
    held: bool
    evidence: dict[str, Any] = Field(description="the numbers the verdict rests on; their names depend on the claim")


class ExperimentOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    target_accuracy: float | None
    status: Literal["queued", "running", "finished"]
    variants: list[VariantOut]
    preset: str | None = Field(None, description="the preset it reproduces, if started from one")
    claim: ClaimOut | None = Field(None, description="a preset's verdict, once every variant's job ended; null before")


class PresetOut(BaseModel):
    name: str
    description: str
    paper: str = Field(description="what the paper (or the seed) says")
    request: dict[str, Any] = Field(description="the experiment it runs, a POST /v1/experiments body")
    claim: dict[str, Any] = Field(description="`statement`, the evaluator `kind` that judges it and its `params`")


class PresetList(BaseModel):
    presets: list[PresetOut]


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    next_cursor: str | None
