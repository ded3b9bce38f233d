"""Training jobs: submit, watch, list, cancel."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import StreamingResponse

from bncore.errors import NotFound
from bncore.specs import JobSpec
from bncore.storage.job_store import FINISHED, JobRecord, JobStore
from bncore.training.activations import activation_series
from bncore.training.plots import activations_png, training_curves_png
from service.auth import Trainer
from service.deps import DatasetFilter, IdempotencyKey, JobsDep, PageQuery, ServicesDep
from service.routes.submission_route import submission_route
from service.schemas import (
    JOB_EXAMPLES,
    PNG_RESPONSE,
    ActivationsOut,
    EpochMetricsOut,
    JobOut,
    JobPage,
    JobStatus,
    error_responses,
)
from service.submissions import plan_submission, queue_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 403, 422))
EVENT_POLL_SECONDS = 0.5


@submission_route(router, JobOut)
def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)],
    response: Response,
    services: ServicesDep,
    caller: Trainer,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a training job. Only `model.architecture`, `model.num_classes` and `dataset` are required:
    `model.input_shape` defaults to the dataset's (for a cnn, its image shape, e.g. [1, 8, 8] for digits)
    and `name` to one made from the spec, e.g. `mlp-3x100-bn-digits`.

    With an `Idempotency-Key` header, sending the same body again returns the job the first
    request made instead of starting another.
    """
    job = queue_job(services, caller, plan_submission(spec, services, caller), idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_record(job)


@router.get("", response_model=JobPage)
def list_jobs(
    jobs: JobsDep,
    caller: Trainer,
    services: ServicesDep,
    requested: PageQuery,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    dataset: DatasetFilter = None,
    experiment: Annotated[str | None, Query(max_length=64, description="only the variant jobs of this experiment")] = None,
) -> JobPage:
    """Jobs, newest first, filtered by `status`, `dataset` and `experiment` where given."""
    job_ids = None
    if experiment is not None:
        try:
            job_ids = [v["job_id"] for v in services.experiments.get(experiment, caller.owner_filter).variants]
        except NotFound:
            job_ids = []
    page, next_cursor = jobs.page(
        requested.limit, requested.cursor, caller.owner_filter, status=status, dataset=dataset, job_ids=job_ids
    )
    return JobPage(items=[JobOut.from_record(job) for job in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
def read_job(job_id: str, jobs: JobsDep, caller: Trainer) -> JobOut:
    """A job with its progress and per-epoch metrics (they appear while it trains)."""
    return JobOut.from_record(jobs.get(job_id, caller.owner_filter))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=error_responses(404, 409))
def cancel_job(job_id: str, jobs: JobsDep, caller: Trainer) -> JobOut:
    """Cancel a queued job at once, or ask a running one to stop (it becomes `cancelled` within a second)."""
    return JobOut.from_record(jobs.cancel(job_id, caller.owner_filter))


@router.get("/{job_id}/plot.png", response_class=Response, responses={**PNG_RESPONSE, **error_responses(404)})
def plot_job(job_id: str, jobs: JobsDep, caller: Trainer) -> Response:
    """Train and validation loss and accuracy per epoch; a job with no finished epoch gets a chart saying so."""
    job = jobs.get(job_id, caller.owner_filter)
    return Response(training_curves_png(job.metrics, f"{job.id} · {job.status}"), media_type="image/png")


def _activations(job: JobRecord) -> list[dict]:
    return activation_series([record for metrics in job.metrics for record in metrics.activations or []])


@router.get("/{job_id}/activations", response_model=ActivationsOut, responses=error_responses(404))
def read_activations(job_id: str, jobs: JobsDep, caller: Trainer) -> ActivationsOut:
    """Under `training.track_activations`: per tracked layer, the 15th, 50th and 85th percentiles, mean and std
    of the inputs to its non-linearity on a fixed probe batch, at every measured step (the paper's Figure 1)."""
    return ActivationsOut.model_validate({"layers": _activations(jobs.get(job_id, caller.owner_filter))})


@router.get("/{job_id}/activations.png", response_class=Response, responses={**PNG_RESPONSE, **error_responses(404)})
def plot_activations(job_id: str, jobs: JobsDep, caller: Trainer) -> Response:
    """The activation percentiles over training steps, one panel per tracked layer."""
    job = jobs.get(job_id, caller.owner_filter)
    return Response(activations_png(_activations(job), f"{job.id} · {job.name}"), media_type="image/png")


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}, **error_responses(404)},
)
def stream_job_events(job_id: str, jobs: JobsDep, caller: Trainer) -> StreamingResponse:
    """Server-Sent Events as the job goes: `status` on each change, `epoch` with each epoch's metrics,
    then `end` with the finished job (`curl -N` shows training as it happens)."""
    jobs.get(job_id, caller.owner_filter)
    return StreamingResponse(
        job_events(jobs, job_id), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def job_events(jobs: JobStore, job_id: str) -> AsyncIterator[str]:
    """A finished job's last epochs come before its final status: a client that stops at `succeeded` has them all."""
    status, epochs_sent = None, 0
    while True:
        job = await asyncio.to_thread(jobs.get, job_id)
        finished = job.status in FINISHED
        if job.status != status and not finished:
            status = job.status
            yield _event("status", {"status": status, "attempts": job.attempts})
        for metrics in job.metrics[epochs_sent:]:
            yield _event("epoch", EpochMetricsOut.from_metrics(metrics).model_dump())
        epochs_sent = len(job.metrics)
        if finished:
            yield _event("status", {"status": job.status, "attempts": job.attempts})
            yield _event("end", JobOut.from_record(job).model_dump(mode="json"))
            return
        await asyncio.sleep(EVENT_POLL_SECONDS)


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"
