"""Trained models: metadata, BN layers, predictions, deletion."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from bncore.batchnorm import batchnorm_layers
from bncore.inference import parse_inputs
from service.auth import Inferrer, Reader, Trainer
from service.deps import CacheDep, ModelsDep, ServicesDep, SettingsDep, require_json
from service.schemas import BatchNormLayerOut, BatchNormOut, ModelOut, ModelPage, PredictIn, PredictOut

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelPage)
def list_models(
    models: ModelsDep,
    caller: Reader,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ModelPage:
    """Models, newest first."""
    page, next_cursor = models.page(limit, cursor, caller.owner_filter)
    return ModelPage(items=[ModelOut.from_record(model) for model in page], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut)
def read_model(model_id: str, models: ModelsDep, caller: Reader) -> ModelOut:
    """A model's spec, dataset, final metrics and parameter count."""
    return ModelOut.from_record(models.get(model_id, caller.owner_filter))


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: str, services: ServicesDep, caller: Trainer) -> Response:
    services.models.delete(model_id, caller.owner_filter)
    services.cache.evict(model_id)
    services.artifacts.delete(model_id)
    return Response(status_code=204)


@router.get("/{model_id}/batchnorm", response_model=BatchNormOut)
def read_batchnorm(model_id: str, models: ModelsDep, cache: CacheDep, caller: Reader) -> BatchNormOut:
    """Every BN layer's γ, β and frozen running statistics, read from the stored artifact."""
    model = cache.get(models.get(model_id, caller.owner_filter))
    return BatchNormOut(model_id=model_id, layers=[BatchNormLayerOut.from_layer(l) for l in batchnorm_layers(model.network)])


@router.post("/{model_id}/predict", response_model=PredictOut, dependencies=[Depends(require_json)])
def predict(
    model_id: str, body: PredictIn, models: ModelsDep, cache: CacheDep, settings: SettingsDep, caller: Inferrer
) -> PredictOut:
    """Class probabilities for raw inputs, in eval mode: a sample's answer does not depend on its batch."""
    model = cache.get(models.get(model_id, caller.owner_filter))
    inputs = parse_inputs(body.inputs, model.input_shape, settings.max_predict_rows)
    prediction = model.predict(inputs)
    return PredictOut(
        model_id=model_id,
        outputs=prediction.logits.tolist(),
        probabilities=prediction.probabilities.tolist(),
        predictions=prediction.classes.tolist(),
    )
