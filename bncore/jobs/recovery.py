"""Jobs whose worker died: found by their stopped heartbeat, queued again or failed as `worker_lost`.

Brokers do not count redeliveries, and the server-less ones do not redeliver at all after a
SIGKILL, so the job store is the source of truth here, in every deployment.
"""

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from bncore.specs import JobSpec
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import utcnow
from bncore.storage.job_store import FINISHED, JobStore

log = logging.getLogger(__name__)


def recover_lost_jobs(
    jobs: JobStore, enqueue: Callable[[str, str], None], stale_after_seconds: float, max_attempts: int
) -> list[str]:
    """Requeue each running job whose heartbeat is older than `stale_after_seconds`; the ids requeued."""
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    requeued = []
    for job in jobs.stale_running(heartbeat_before=cutoff):
        if job.workers_lost >= max_attempts:
            log.warning("job %s lost its worker %d times; failing it", job.id, job.workers_lost)
            jobs.fail(job.id, "worker_lost", f"the job's worker was lost {job.workers_lost} times (the limit)")
        elif jobs.requeue_if_stale(job.id, heartbeat_before=cutoff):
            log.warning("job %s lost its worker %s; queueing it again", job.id, job.worker)
            enqueue(job.id, JobSpec.model_validate(job.spec).resources.device)
            requeued.append(job.id)
    return requeued


def requeue_orphaned_jobs(
    jobs: JobStore, enqueue: Callable[[str, str], None], waiting: Callable[[], set[str]], grace_seconds: float
) -> list[str]:
    """Send again each job queued for over `grace_seconds` whose message is no longer on the broker.

    For the folder broker: a worker takes a message off the folder before it claims the job, so
    one killed in between leaves the job queued with nothing left to deliver it. `waiting` lists
    the jobs whose messages are still there. A second message for a job is harmless: only one
    worker can claim it.
    """
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    queued = jobs.queued_before(cutoff)
    if not queued:
        return []
    on_broker = waiting()
    orphans = [job for job in queued if job.id not in on_broker]
    for job in orphans:
        log.warning("job %s is queued with no message left on the broker; sending it again", job.id)
        enqueue(job.id, JobSpec.model_validate(job.spec).resources.device)
    return [job.id for job in orphans]


def remove_finished_checkpoints(jobs: JobStore, checkpoints: ArtifactStore) -> list[str]:
    """Delete the checkpoints of finished jobs; the ids whose checkpoint went.

    A worker deletes its job's checkpoint when the job ends, but a job failed as `worker_lost`, or
    cancelled while queued again after a lost worker, ends with no worker to do it.
    """
    stored = checkpoints.names()
    if not stored:
        return []
    finished = [job_id for job_id, job in jobs.get_many(stored).items() if job.status in FINISHED]
    for job_id in finished:
        checkpoints.delete(job_id)
    return finished


class RecoveryLoop:
    """Runs a recovery pass (the functions above) every `interval` seconds in a thread of the API process."""

    def __init__(self, recover: Callable[[], object], interval: float) -> None:
        self.recover = recover
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-recovery", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.recover()
            except Exception:
                log.exception("recovering lost jobs failed; trying again in %ss", self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
