"""Trained models: metadata, BN layers, predictions, drift, downloads, deletion."""

from functools import partial
from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Body, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from bncore.bn.kinds import drift_note
from bncore.bn.layers import batchnorm_layers, normalization_layers
from bncore.jobs.recalibration import check_recalibration
from bncore.serving.drift import DriftThresholds
from bncore.serving.inputs import parse_inputs
from bncore.serving.served_model import ServedModel
from bncore.settings import Settings, from_settings
from bncore.specs import Recalibration, RecalibrationRequest
from bncore.training.plots import batchnorm_png
from service.auth import Inferrer, Reader, Trainer
from service.deps import (
    DatasetFilter,
    ModelsDep,
    PageQuery,
    Services,
    ServicesDep,
    SettingsDep,
    require_json,
    require_json_if_any,
)
from service.observability.metrics import PREDICT_ROUTE
from service.schemas import (
    PNG_RESPONSE,
    BatchNormLayerOut,
    BatchNormOut,
    DriftOut,
    JobOut,
    ModelOut,
    ModelPage,
    PredictIn,
    PredictOut,
    error_responses,
)
from service.submissions import enqueue_or_fail

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 403, 422))
# Routes that load the stored weights answer 503 when they are missing or damaged.
SERVED = error_responses(404, 503)
# Up to this many rows predict parses its inputs on the event loop; a larger request, in a thread.
INLINE_PARSE_ROWS = 64


def parse_predict_inputs(rows: Any, model: ServedModel, settings: Settings) -> torch.Tensor:
    """A predict request's inputs for `model`, at most MAX_PREDICT_ROWS: the route and the fast path both parse here."""
    return parse_inputs(rows, model.input_shape, settings.max_predict_rows)


async def served_model(services: Services, model_id: str, owner: str | None) -> ServedModel:
    """The model as this process serves it: from the cache without a database read, else loaded in a thread."""
    cached = services.cache.lookup(model_id, owner)
    if cached is not None:
        return cached
    return await run_in_threadpool(services.cache.load, services.models, model_id, owner)


async def readable_model(model_id: str, services: ServicesDep, caller: Reader) -> ServedModel:
    return await served_model(services, model_id, caller.owner_filter)


async def inferable_model(model_id: str, services: ServicesDep, caller: Inferrer) -> ServedModel:
    return await served_model(services, model_id, caller.owner_filter)


ReadableModel = Annotated[ServedModel, Depends(readable_model)]
InferableModel = Annotated[ServedModel, Depends(inferable_model)]


@router.get("", response_model=ModelPage)
def list_models(
    models: ModelsDep,
    settings: SettingsDep,
    caller: Reader,
    requested: PageQuery,
    dataset: DatasetFilter = None,
    job: Annotated[str | None, Query(max_length=64, description="only the model this job trained")] = None,
) -> ModelPage:
    """Models, newest first, filtered by `dataset` and `job` where given."""
    page, next_cursor = models.page(requested.limit, requested.cursor, caller.owner_filter, dataset=dataset, job_id=job)
    items = [ModelOut.from_record(model, settings.fold_batchnorm) for model in page]
    return ModelPage(items=items, next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut, responses=error_responses(404))
def read_model(model_id: str, models: ModelsDep, settings: SettingsDep, caller: Reader) -> ModelOut:
    """A model's spec, dataset, final metrics, parameter count, and how it is served (BN folded or not)."""
    return ModelOut.from_record(models.get(model_id, caller.owner_filter), settings.fold_batchnorm)


@router.delete("/{model_id}", status_code=204, responses=error_responses(404))
def delete_model(model_id: str, services: ServicesDep, caller: Trainer) -> Response:
    services.models.delete(model_id, caller.owner_filter)
    services.cache.evict(model_id)
    services.drift.store.forget_model(model_id)
    services.artifacts.delete(model_id)
    return Response(status_code=204)


@router.get("/{model_id}/batchnorm", response_model=BatchNormOut, responses=SERVED)
def read_batchnorm(model_id: str, model: ReadableModel) -> BatchNormOut:
    """Every BN layer's γ, β and frozen running statistics, read from the stored artifact; GroupNorm and
    LayerNorm layers with their γ and β, and null statistics: they keep none."""
    layers = normalization_layers(model.trained.network)
    return BatchNormOut(model_id=model_id, layers=[BatchNormLayerOut.from_layer(layer) for layer in layers])


@router.get("/{model_id}/batchnorm/plot.png", response_class=Response, responses={**PNG_RESPONSE, **SERVED})
def plot_batchnorm(model_id: str, model: ReadableModel) -> Response:
    """γ, β, running mean and running variance of each BN layer per feature; dashed: their initial values."""
    png = batchnorm_png(batchnorm_layers(model.trained.network), f"{model_id}: BN layers")
    return Response(png, media_type="image/png")


# Most predict requests never reach this route: the fast path (service/predict_fast_path.py, in front of
# FastAPI's middleware: ServiceApp in service/app.py) answers a plain JSON request for a cached model
# first, with the same bytes. What it passes on comes here, so this route is the one that explains what
# is wrong with a request.
@router.post(
    PREDICT_ROUTE.removeprefix(router.prefix),
    response_model=PredictOut,
    dependencies=[Depends(require_json)],
    responses={**SERVED, **error_responses(413, 415)},
)
async def predict(model_id: str, body: PredictIn, model: InferableModel, settings: SettingsDep) -> PredictOut:
    """Class probabilities for raw inputs, in eval mode: a sample's answer does not depend on its batch."""
    parse = partial(parse_predict_inputs, body.inputs, model, settings)
    inputs = parse() if len(body.inputs) <= INLINE_PARSE_ROWS else await run_in_threadpool(parse)
    return PredictOut.of(model_id, await model.predict_async(inputs))


@router.get("/{model_id}/drift", response_model=DriftOut, responses=SERVED)
def read_drift(model_id: str, model: ReadableModel, services: ServicesDep) -> DriftOut:
    """How the inputs each BN layer sees while serving compare with its frozen statistics (covariate shift).

    Counted over every API process: this one's moments now, the others' as they last published them.
    """
    thresholds = from_settings(DriftThresholds, services.settings, prefix="drift_")
    report = services.drift.report(model_id, model, thresholds)
    return DriftOut.from_report(model_id, report, drift_note(model.trained.spec.model.normalization))


@router.get(
    "/{model_id}/artifact",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the model file"}, **SERVED},
)
def download_artifact(
    model_id: str,
    services: ServicesDep,
    caller: Reader,
    artifact_format: Annotated[Literal["safetensors", "onnx"], Query(alias="format")] = "safetensors",
) -> Response:
    """`safetensors`: the stored training-form file (unfolded weights, γ, β, running statistics, input
    standardisation). `onnx`: the served graph with BN folded, taking raw inputs, any batch size."""
    record = services.models.get(model_id, caller.owner_filter)
    if artifact_format == "onnx":
        payload = services.cache.onnx(record)
    else:
        payload = services.artifacts.read_verified(record.id, record.artifact_sha256)
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{model_id}.{artifact_format}"'},
    )


@router.post(
    "/{model_id}/recalibrate",
    status_code=202,
    response_model=JobOut,
    dependencies=[Depends(require_json_if_any)],
    responses={**SERVED, **error_responses(413, 415)},
)
def recalibrate_model(
    model_id: str,
    response: Response,
    services: ServicesDep,
    caller: Trainer,
    body: Annotated[RecalibrationRequest | None, Body()] = None,
) -> JobOut:
    """Start a job that recomputes every BN layer's statistics over data, layer by layer (population
    statistics); the result is a new model whose `parent_id` is this one. Omit `dataset` for the model's
    own training split; another dataset with the same features adapts the model to it (AdaBN). Every
    field is optional: no body at all is the same as `{}`."""
    body = body or RecalibrationRequest()
    parent = services.models.get(model_id, caller.owner_filter)
    check_recalibration(parent.spec, body, services.datasets.visible_to(caller.owner_filter))
    recalibration = Recalibration(parent_model_id=model_id, **body.model_dump())
    job, _ = services.jobs.create(
        parent.spec.model_dump(mode="json"),
        caller.owner,
        recalibration=recalibration.model_dump(mode="json"),
        name=f"{parent.name}-recalibrated",
    )
    enqueue_or_fail(services, job.id, parent.spec.resources.device)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_record(job)
