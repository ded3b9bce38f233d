"""What a running job may send to the broker, given by the worker's Celery adapter: the domain knows no Celery."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class JoinRequest:
    """A place in the gang of one attempt at a job spanning several workers: what a join task carries."""

    job_id: str
    attempt: int
    member: int


@dataclass(frozen=True)
class Dispatch:
    send_job: Callable[[str, str], None]  # (job id, queue): the job, queued again
    send_join: Callable[[JoinRequest, str, float], None]  # (request, queue, seconds to wait): a place for another worker
