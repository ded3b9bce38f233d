"""Jobs spanning several workers: the taker gathers a gang, the other workers join it.

The worker that takes such a job (member 0) publishes a rendezvous endpoint in the job's record and
sends one join task per other member; each worker that takes one registers as that member, reads the
endpoint and launches its processes into the same c10d rendezvous (bncore.training.data_parallel).
A worker joins an attempt once: a join task reaching a member already is passed on to another worker.
If not every member joins within the join timeout, every launcher gives up, and member 0 queues the
job again, freeing the workers it held: two such jobs never wait forever on half the workers each.
"""

import logging
import time
from collections.abc import Callable

from bncore.jobs.dispatch import JoinRequest
from bncore.jobs.execution import RunLimits, prepared, stored_checkpoint
from bncore.specs import JobSpec
from bncore.storage.job_store import Joined, Lease
from bncore.storage.wiring import Stores
from bncore.training.data_parallel import Gang, GangFailed, GangIncomplete, join_data_parallel
from bncore.training.devices import training_device
from bncore.training.loop import TrainingDiverged, TrainingInterrupted

log = logging.getLogger(__name__)


class AttemptOver(TrainingInterrupted):
    pass


def join_job(request: JoinRequest, stores: Stores, worker: str, limits: RunLimits, pass_on: Callable[[], None]) -> None:
    """Train as member `request.member` of the job's gang until it ends; member 0 records and stores the model.

    A stale request (the attempt is over, or the place taken) is dropped; `pass_on` sends it again for
    another worker when this one is in the gang already.
    """
    lease = Lease(request.job_id, request.attempt)
    device = training_device()
    joined = stores.jobs.join(lease, request.member, worker, str(device))
    if joined is Joined.ALREADY_MEMBER:
        log.info("job %s: this worker is in its gang already; passing member %d on", request.job_id, request.member)
        pass_on()
        return
    if joined is Joined.NOT_GATHERING:
        log.info("job %s: attempt %d no longer gathers member %d; dropping", request.job_id, request.attempt, request.member)
        return
    job = stores.jobs.get(request.job_id)
    spec = JobSpec.model_validate(job.spec)
    assert job.rendezvous_endpoint is not None  # join() found it published
    gang = Gang(
        spec.resources.processes,
        f"{request.job_id}-{request.attempt}",
        limits.checkpoint_seconds,
        members=spec.resources.workers,
        member=request.member,
        endpoint=job.rendezvous_endpoint,
        join_timeout_seconds=limits.gang_join_timeout_seconds,
        host=limits.gang_host,
    )
    data, _ = prepared(spec, stores.datasets)
    try:
        join_data_parallel(
            spec, data, gang, _attempt_watch(lease, stores, limits), stored_checkpoint(stores.checkpoints, request.job_id)
        )
    except (GangFailed, GangIncomplete, TrainingDiverged, AttemptOver) as error:
        # Member 0 records what became of the attempt: a failure here fails its processes too.
        log.warning("job %s: member %d leaves the gang: %s", request.job_id, request.member, error)
        return
    log.info("job %s: member %d done", request.job_id, request.member)


def _attempt_watch(lease: Lease, stores: Stores, limits: RunLimits) -> Callable[[], None]:
    """Stops this member's processes once the attempt is over (cancelled, failed, or queued again)."""
    last_poll = 0.0

    def interrupt() -> None:
        nonlocal last_poll
        now = time.monotonic()
        if now - last_poll < limits.cancel_poll_seconds:
            return
        last_poll = now
        if not stores.jobs.is_current(lease):
            raise AttemptOver()

    return interrupt
