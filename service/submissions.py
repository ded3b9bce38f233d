"""Submitting jobs, as POST /v1/jobs and POST /v1/experiments both do: plan, count, store, enqueue."""

import logging

from bncore.errors import InvalidField, QueueUnavailable
from bncore.jobs.planning import plan_job
from bncore.specs import JobSpec
from bncore.storage.job_store import JobRecord
from service.auth import Principal
from service.deps import Services

log = logging.getLogger(__name__)


def plan_submission(spec: JobSpec, services: Services, caller: Principal) -> JobSpec:
    """The job as it will run, within this service's limits, on data the caller may use and a queue a worker takes."""
    settings = services.settings
    planned = plan_job(
        spec,
        settings.max_parameters,
        settings.max_sample_epochs,
        settings.job_time_limit_seconds,
        services.datasets.visible_to(caller.owner_filter),
    )
    check_a_worker_can_take(planned, services.known_queues)
    return planned


def check_a_worker_can_take(spec: JobSpec, known_queues: list[str] | None) -> None:
    if known_queues is not None and spec.resources.device not in known_queues:
        raise InvalidField(
            "resources.device",
            f"no worker here takes '{spec.resources.device}' jobs; the workers consume {known_queues}",
        )


def queue_job(services: Services, caller: Principal, planned: JobSpec, idempotency_key: str | None = None) -> JobRecord:
    """Count the job against the caller's rate, store it queued and enqueue it (unless the key names an earlier one)."""
    spec = planned.model_dump(mode="json")
    if idempotency_key is None or services.jobs.earlier(caller.owner, idempotency_key, spec, name=planned.name) is None:
        services.submissions.take(caller.owner)  # a retry answered with the job it made costs no submission
    job, created = services.jobs.create(spec, caller.owner, idempotency_key, name=planned.name)
    if created:
        enqueue_or_fail(services, job.id, planned.resources.device)
    return job


def enqueue_or_fail(services: Services, job_id: str, device: str) -> None:
    """Hand a new job to the queue; if the broker is down, the job fails at once instead of waiting forever."""
    try:
        services.enqueue(job_id, device)
    except Exception as error:
        log.exception("could not enqueue job %s", job_id)
        services.jobs.fail(job_id, QueueUnavailable.code, f"the job queue is unreachable: {error}")
        raise QueueUnavailable("the job queue is unreachable; the job was not started, try again later") from error
