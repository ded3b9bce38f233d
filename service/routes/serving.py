"""How this API process serves a model: dynamic batching settings and counters since the model was loaded."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.routes.models import ReadableModel
from service.schemas import error_responses

router = APIRouter(prefix="/v1/models", tags=["models"], responses=error_responses(401, 403, 404, 422, 503))


class ServingStatsOut(BaseModel):
    model_id: str
    max_batch_size: int = Field(description="most rows one forward pass gathers (MAX_BATCH_SIZE)")
    max_queue_delay_ms: float = Field(description="the longest a request waits for others (MAX_QUEUE_DELAY_MS)")
    batching: bool = Field(description="false when MAX_BATCH_SIZE is 1 or MAX_QUEUE_DELAY_MS is 0")
    requests: int = Field(description="predict requests answered by this process since it loaded the model")
    rows: int = Field(description="rows those requests carried")
    forward_passes: int = Field(description="forward passes that answered them: fewer than requests when batched")
    largest_batch_rows: int


@router.get("/{model_id}/serving", response_model=ServingStatsOut)
def read_serving(model_id: str, model: ReadableModel) -> ServingStatsOut:
    """Dynamic batching at work: requests answered and the forward passes they took, per API process."""
    stats, policy = model.serving_stats(), model.batcher.policy
    return ServingStatsOut(
        model_id=model_id,
        max_batch_size=policy.max_batch_size,
        max_queue_delay_ms=policy.max_queue_delay_ms,
        batching=policy.enabled,
        requests=stats.requests,
        rows=stats.rows,
        forward_passes=stats.forward_passes,
        largest_batch_rows=stats.largest_batch_rows,
    )
