"""Training jobs: submit, watch, list, cancel."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from bncore.errors import QueueUnavailable
from bncore.planning import plan_job
from bncore.plots import training_curves_png
from bncore.specs import JobSpec
from service.deps import JobsDep, ServicesDep, require_json
from service.schemas import PNG_RESPONSE, JobOut, JobPage

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, response_model=JobOut, dependencies=[Depends(require_json)])
def submit_job(spec: JobSpec, response: Response, services: ServicesDep) -> JobOut:
    """Queue a training job. Only `model.architecture`, `model.num_classes` and `dataset` are required."""
    planned = plan_job(spec, services.settings.max_parameters)
    job = services.jobs.create(planned.model_dump(mode="json"))
    try:
        services.enqueue(job.id)
    except Exception as error:
        log.exception("could not enqueue job %s", job.id)
        services.jobs.fail(job.id, QueueUnavailable.code, f"the job queue is unreachable: {error}")
        raise QueueUnavailable("the job queue is unreachable; the job was not started, try again later") from error
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_record(job)


@router.get("", response_model=JobPage)
def list_jobs(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    """Jobs, newest first."""
    page, next_cursor = jobs.list(limit, cursor)
    return JobPage(items=[JobOut.from_record(job) for job in page], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, jobs: JobsDep) -> JobOut:
    """A job with its progress and per-epoch metrics (they appear while it trains)."""
    return JobOut.from_record(jobs.get(job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut)
def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Cancel a queued job at once, or ask a running one to stop (it becomes `cancelled` within a second)."""
    return JobOut.from_record(jobs.cancel(job_id))


@router.get("/{job_id}/plot.png", response_class=Response, responses=PNG_RESPONSE)
def plot_job(job_id: str, jobs: JobsDep) -> Response:
    """Train and validation loss and accuracy per epoch; a job with no finished epoch gets a chart saying so."""
    job = jobs.get(job_id)
    return Response(training_curves_png(job.metrics, f"{job.id} · {job.status}"), media_type="image/png")
