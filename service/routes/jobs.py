"""Training jobs: submit, watch, list, cancel."""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Response

from bncore.errors import InvalidField, QueueUnavailable
from bncore.planning import plan_job
from bncore.plots import training_curves_png
from bncore.specs import JobSpec
from service.auth import Trainer
from service.deps import JobsDep, ServicesDep, require_json
from service.schemas import JOB_EXAMPLES, PNG_RESPONSE, JobOut, JobPage, error_responses

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 403, 422))


def _check_a_worker_can_take(spec: JobSpec, known_queues: list[str] | None) -> None:
    if known_queues is not None and spec.resources.device not in known_queues:
        raise InvalidField(
            "resources.device",
            f"no worker here takes '{spec.resources.device}' jobs; the workers consume {known_queues}",
        )


@router.post(
    "", status_code=202, response_model=JobOut, dependencies=[Depends(require_json)],
    responses=error_responses(409, 413, 415, 429, 503),
)
def submit_job(
    spec: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)],
    response: Response,
    services: ServicesDep,
    caller: Trainer,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobOut:
    """Queue a training job. Only `model.architecture`, `model.num_classes` and `dataset` are required.

    With an `Idempotency-Key` header, sending the same body again returns the job the first
    request made instead of starting another.
    """
    settings = services.settings
    planned = plan_job(spec, settings.max_parameters, settings.max_sample_epochs, settings.job_time_limit_seconds)
    _check_a_worker_can_take(planned, services.known_queues)
    services.submissions.take(caller.owner)
    job, created = services.jobs.create(planned.model_dump(mode="json"), caller.owner, idempotency_key)
    if created:
        try:
            services.enqueue(job.id, planned.resources.device)
        except Exception as error:
            log.exception("could not enqueue job %s", job.id)
            services.jobs.fail(job.id, QueueUnavailable.code, f"the job queue is unreachable: {error}")
            raise QueueUnavailable("the job queue is unreachable; the job was not started, try again later") from error
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_record(job)


@router.get("", response_model=JobPage)
def list_jobs(
    jobs: JobsDep,
    caller: Trainer,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    """Jobs, newest first."""
    page, next_cursor = jobs.page(limit, cursor, caller.owner_filter)
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
