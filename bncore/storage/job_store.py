"""Job records: the source of truth for a job's status, progress and metrics, in every deployment."""

import enum
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bncore.errors import Conflict, JobNotFound
from bncore.naming import default_name
from bncore.storage.database import Database, EpochRow, GangMemberRow, JobRow, utcnow
from bncore.storage.pagination import newest_first
from bncore.storage.records import record_from_row
from bncore.training.epoch_metrics import EpochMetrics

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one attempt at a job; void once the job is queued again or finished."""

    job_id: str
    attempt: int


class LeaseLost(Exception):
    def __init__(self, lease: Lease) -> None:
        super().__init__(f"job {lease.job_id} was taken from attempt {lease.attempt}")


class Joined(enum.Enum):
    """What became of a worker's request to join the gang of an attempt at a job."""

    JOINED = "joined"
    ALREADY_MEMBER = "already_member"  # this worker is in the gang already: another worker must take the place
    NOT_GATHERING = "not_gathering"  # the attempt is over, or its place was taken (a join task delivered twice)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: str
    spec: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    epochs: int
    device: str | None
    worker: str | None
    model_id: str | None
    error: JobError | None
    cancel_requested: bool
    attempts: int
    heartbeat_at: datetime | None
    resumed_from_epoch: int | None
    owner: str | None
    recalibration: dict[str, Any] | None
    name: str = ""
    metrics: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None  # under early stopping, the epoch whose weights the model holds
    workers: list[str] = field(default_factory=list)  # of the attempt under way or last, member 0 (`worker`) first
    devices: list[str] = field(default_factory=list)  # each worker's, in the same order
    rendezvous_endpoint: str | None = None  # of the last attempt's gang, when it spans several workers
    gatherings_missed: int = 0  # attempts given up because their gang did not gather in time

    @property
    def workers_lost(self) -> int:
        """Attempts that ended by losing a worker (or are under way): what MAX_ATTEMPTS limits."""
        return self.attempts - self.gatherings_missed

    @property
    def epoch(self) -> int:
        """Epochs finished, read off the metrics so the two can never disagree."""
        return self.metrics[-1].epoch if self.metrics else 0

    @property
    def world_size(self) -> int:
        """Processes that train the job together, from its spec (older specs have no `processes`: 1)."""
        resources = self.spec.get("resources", {})
        return int(resources.get("processes", 1)) * int(resources.get("workers", 1))

    @classmethod
    def from_row(cls, row: JobRow) -> "JobRecord":
        # None while queued again, as `worker` is: a new attempt gathers a new gang.
        members = [member for member in row.members if member.attempt == row.attempts] if row.worker else []
        return record_from_row(
            cls,
            row,
            name=row.name or default_name(row.spec),
            error=JobError(row.error_code, row.error_message or "") if row.error_code else None,
            metrics=[
                EpochMetrics(
                    m.epoch, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.seconds, m.learning_rate, m.activations
                )
                for m in row.metrics
            ],
            workers=[member.worker for member in members] or ([row.worker] if row.worker else []),
            devices=[member.device for member in members] or ([row.device] if row.device else []),
        )


def request_sha256(request: dict[str, Any]) -> str:
    """What an idempotent retry must send again, hashed."""
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def new_job_row(
    spec: dict[str, Any],
    owner: str,
    idempotency_key: str | None = None,
    recalibration: dict[str, Any] | None = None,
    name: str | None = None,
) -> JobRow:
    """A queued job, not yet added to any session; without a `name`, one made from the spec."""
    return JobRow(
        id=f"job_{uuid.uuid4().hex}",
        status=QUEUED,
        spec=spec,
        created_at=utcnow(),
        epochs=0 if recalibration else spec["training"]["epochs"],
        cancel_requested=False,
        attempts=0,
        owner=owner,
        idempotency_key=idempotency_key,
        request_sha256=request_sha256({"spec": spec, "recalibration": recalibration, "name": name}),
        recalibration=recalibration,
        name=name or default_name(spec),
    )


def dataset_is(spec: Any, dataset: str) -> ColumnElement[bool]:
    """The stored spec's `dataset.name` or `dataset.id` is `dataset`."""
    return or_(spec[("dataset", "name")].as_string() == dataset, spec[("dataset", "id")].as_string() == dataset)


def _current(lease: Lease) -> tuple[ColumnElement[bool], ...]:
    """Where the job is running on the attempt `lease` names: what every write of that attempt requires."""
    return (JobRow.id == lease.job_id, JobRow.status == RUNNING, JobRow.attempts == lease.attempt)


class JobStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def create(
        self,
        spec: dict[str, Any],
        owner: str,
        idempotency_key: str | None = None,
        recalibration: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """The new job, or with an `idempotency_key` seen before, the job it made; True when new.

        Conflict when the key was used with another request body. A recalibration job carries the
        parent model's spec and trains no epochs. Without a `name`, one is made from the spec.
        """
        if idempotency_key is not None and (earlier := self.earlier(owner, idempotency_key, spec, recalibration, name)):
            return earlier, False
        row = new_job_row(spec, owner, idempotency_key, recalibration, name)
        try:
            with self.db.session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            # The same key raced in from another request: answer as if it had come first.
            return self.create(spec, owner, idempotency_key, recalibration, name)
        return self.get(row.id), True

    def earlier(
        self,
        owner: str,
        idempotency_key: str,
        spec: dict[str, Any],
        recalibration: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> JobRecord | None:
        """The job a request with this key made before; Conflict when that request had another body."""
        earlier = self._by_idempotency_key(owner, idempotency_key)
        if earlier is None:
            return None
        if earlier.request_sha256 != request_sha256({"spec": spec, "recalibration": recalibration, "name": name}):
            raise Conflict(f"Idempotency-Key '{idempotency_key}' was used for a different request")
        return JobRecord.from_row(earlier)

    def _by_idempotency_key(self, owner: str, key: str) -> JobRow | None:
        with self.db.session() as session:
            return session.scalar(select(JobRow).where(JobRow.owner == owner, JobRow.idempotency_key == key))

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """A job; with `owner`, only if it is theirs (JobNotFound otherwise, as for a missing one)."""
        with self.db.session() as session:
            row = session.get(JobRow, job_id)
            if row is None or (owner is not None and row.owner != owner):
                raise JobNotFound(job_id)
            return JobRecord.from_row(row)

    def get_many(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """The jobs of `job_ids` that exist, by id, read in one query."""
        with self.db.session() as session:
            rows = session.scalars(select(JobRow).where(JobRow.id.in_(job_ids))).all()
            return {row.id: JobRecord.from_row(row) for row in rows}

    def page(
        self,
        limit: int,
        cursor: str | None,
        owner: str | None = None,
        *,
        status: str | None = None,
        dataset: str | None = None,
        job_ids: list[str] | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; only jobs with `status`, on `dataset` (a built-in's name or an upload's id),
        or among `job_ids`, for those given."""
        filters = []
        if status is not None:
            filters.append(JobRow.status == status)
        if dataset is not None:
            filters.append(dataset_is(JobRow.spec, dataset))
        if job_ids is not None:
            filters.append(JobRow.id.in_(job_ids))
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, JobRow, limit, cursor, owner, filters)
            return [JobRecord.from_row(row) for row in rows], next_cursor

    def _transition(self, job_id: str, allowed: tuple[str, ...], *conditions: Any, **values: Any) -> bool:
        """Set `values` only if the job is in one of the `allowed` states; atomic across processes."""
        with self.db.session() as session, session.begin():
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(allowed), *conditions).values(**values)
            )
            return result.rowcount == 1

    def _leased(self, lease: Lease, **values: Any) -> bool:
        """Set `values` only while `lease` is the job's current attempt."""
        return self._transition(lease.job_id, (RUNNING,), JobRow.attempts == lease.attempt, **values)

    def start(self, job_id: str, device: str, worker: str) -> Lease | None:
        """Claim a queued job for a worker; None when it was cancelled, finished or taken already."""
        now = utcnow()
        with self.db.session() as session, session.begin():
            attempt = session.scalar(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == QUEUED)
                .values(
                    status=RUNNING, started_at=now, heartbeat_at=now, device=device, worker=worker, attempts=JobRow.attempts + 1
                )
                .returning(JobRow.attempts)
            )
        return Lease(job_id, attempt) if attempt is not None else None

    def gather(self, lease: Lease, endpoint: str, worker: str, device: str) -> bool:
        """Publish the rendezvous endpoint of the attempt's gang, with its taker as member 0; False once lost."""
        with self.db.session() as session, session.begin():
            held = session.execute(
                update(JobRow).where(*_current(lease)).values(rendezvous_endpoint=endpoint, heartbeat_at=utcnow())
            ).rowcount
            if held:
                session.add(GangMemberRow(job_id=lease.job_id, attempt=lease.attempt, member=0, worker=worker, device=device))
            return bool(held)

    def join(self, lease: Lease, member: int, worker: str, device: str) -> Joined:
        """Take place `member` in the gang of the attempt `lease` names, if it still gathers and the worker is new to it."""
        try:
            with self.db.session() as session, session.begin():
                gathering = session.scalar(
                    select(JobRow.id).where(
                        *_current(lease),
                        JobRow.rendezvous_endpoint.is_not(None),
                    )
                )
                if gathering is None:
                    return Joined.NOT_GATHERING
                session.add(
                    GangMemberRow(job_id=lease.job_id, attempt=lease.attempt, member=member, worker=worker, device=device)
                )
            return Joined.JOINED
        except IntegrityError:
            with self.db.session() as session:
                mine = session.scalar(
                    select(GangMemberRow.member).where(
                        GangMemberRow.job_id == lease.job_id,
                        GangMemberRow.attempt == lease.attempt,
                        GangMemberRow.worker == worker,
                    )
                )
            return Joined.ALREADY_MEMBER if mine is not None and mine != member else Joined.NOT_GATHERING

    def is_current(self, lease: Lease) -> bool:
        """Whether the attempt `lease` names still runs: a member that is not the job's taker asks this."""
        with self.db.session() as session:
            held = session.scalar(select(JobRow.id).where(*_current(lease)))
            return held is not None

    def requeue_incomplete(self, lease: Lease) -> bool:
        """Running → queued, by the taker of a gang whose workers did not all join: it frees the ones that did."""
        return self._leased(
            lease,
            status=QUEUED,
            worker=None,
            rendezvous_endpoint=None,
            heartbeat_at=utcnow(),
            gatherings_missed=JobRow.gatherings_missed + 1,
        )

    def heartbeat(self, lease: Lease) -> bool:
        """False once the job was queued again or finished: this worker must stop working on it."""
        return self._leased(lease, heartbeat_at=utcnow())

    def mark_resumed(self, lease: Lease, epoch: int) -> None:
        self._leased(lease, resumed_from_epoch=epoch)

    def record_epochs(self, lease: Lease, epochs: list[EpochMetrics]) -> None:
        """In one transaction; an epoch recorded before, by an attempt that lost the job, is replaced."""
        with self.db.session() as session, session.begin():
            held = session.execute(update(JobRow).where(*_current(lease)).values(heartbeat_at=utcnow())).rowcount
            if not held:
                raise LeaseLost(lease)
            # Delete then insert rather than merge, which selects each row first: two statements for any number.
            session.execute(
                delete(EpochRow).where(EpochRow.job_id == lease.job_id, EpochRow.epoch.in_([metrics.epoch for metrics in epochs]))
            )
            session.execute(insert(EpochRow), [{"job_id": lease.job_id, **metrics.__dict__} for metrics in epochs])

    def succeed(self, lease: Lease, model_id: str, best_epoch: int | None = None) -> bool:
        return self._leased(lease, status=SUCCEEDED, finished_at=utcnow(), model_id=model_id, best_epoch=best_epoch)

    def fail(self, job_id: str, code: str, message: str, lease: Lease | None = None) -> None:
        """Fail a job; a worker passes its lease, so a job it lost is not failed under its successor."""
        values = dict(status=FAILED, finished_at=utcnow(), error_code=code, error_message=message)
        if lease is not None:
            self._leased(lease, **values)
        else:
            self._transition(job_id, (QUEUED, RUNNING), **values)

    def mark_cancelled(self, lease: Lease) -> None:
        self._leased(lease, status=CANCELLED, finished_at=utcnow())

    def stale_running(self, heartbeat_before: datetime) -> list[JobRecord]:
        """Running jobs whose worker stopped beating: killed, lost, or cut off from the database."""
        with self.db.session() as session:
            rows = session.scalars(select(JobRow).where(JobRow.status == RUNNING, JobRow.heartbeat_at < heartbeat_before)).all()
            return [JobRecord.from_row(row) for row in rows]

    def queued_before(self, cutoff: datetime) -> list[JobRecord]:
        """Queued jobs untouched since `cutoff`: submitted, or queued again after a lost worker, before it."""
        with self.db.session() as session:
            queued_at = func.coalesce(JobRow.heartbeat_at, JobRow.created_at)
            rows = session.scalars(select(JobRow).where(JobRow.status == QUEUED, queued_at < cutoff)).all()
            return [JobRecord.from_row(row) for row in rows]

    def requeue_if_stale(self, job_id: str, heartbeat_before: datetime) -> bool:
        """Running → queued, only if its heartbeat is still old: two API processes cannot both requeue it."""
        return self._transition(job_id, (RUNNING,), JobRow.heartbeat_at < heartbeat_before, status=QUEUED, worker=None)

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        """A queued job is cancelled at once; a running one is asked to stop at its next step."""
        job = self.get(job_id, owner)
        if job.status in FINISHED:
            raise Conflict(f"job '{job_id}' is already {job.status}; only queued or running jobs can be cancelled")
        if not self._transition(job_id, (QUEUED,), status=CANCELLED, finished_at=utcnow(), cancel_requested=True):
            self._transition(job_id, (RUNNING,), cancel_requested=True)
        return self.get(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.db.session() as session:
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))
