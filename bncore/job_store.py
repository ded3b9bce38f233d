"""Job records: the source of truth for a job's status, progress and metrics, in every deployment."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from bncore.database import Database, EpochRow, JobRow, utcnow
from bncore.errors import Conflict, JobNotFound
from bncore.pagination import newest_first
from bncore.training import EpochMetrics

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)


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
    metrics: list[EpochMetrics] = field(default_factory=list)

    @property
    def epoch(self) -> int:
        """Epochs finished, read off the metrics so the two can never disagree."""
        return self.metrics[-1].epoch if self.metrics else 0

    @classmethod
    def from_row(cls, row: JobRow) -> "JobRecord":
        return cls(
            id=row.id, status=row.status, spec=row.spec, created_at=row.created_at, started_at=row.started_at,
            finished_at=row.finished_at, epochs=row.epochs, device=row.device, worker=row.worker,
            model_id=row.model_id, cancel_requested=row.cancel_requested, attempts=row.attempts,
            error=JobError(row.error_code, row.error_message or "") if row.error_code else None,
            metrics=[
                EpochMetrics(m.epoch, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy) for m in row.metrics
            ],
        )


class JobStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def create(self, spec: dict[str, Any]) -> JobRecord:
        row = JobRow(
            id=f"job_{uuid.uuid4().hex}", status=QUEUED, spec=spec, created_at=utcnow(),
            epochs=spec["training"]["epochs"], cancel_requested=False, attempts=0,
        )
        with self.db.session() as session, session.begin():
            session.add(row)
        return self.get(row.id)

    def get(self, job_id: str) -> JobRecord:
        with self.db.session() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id)
            return JobRecord.from_row(row)

    def list(self, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, JobRow, limit, cursor)
            return [JobRecord.from_row(row) for row in rows], next_cursor

    def _transition(self, job_id: str, allowed: tuple[str, ...], **values: Any) -> bool:
        """Set `values` only if the job is in one of the `allowed` states; atomic across processes."""
        with self.db.session() as session, session.begin():
            result = session.execute(
                update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(allowed)).values(**values)
            )
            return result.rowcount == 1

    def start(self, job_id: str, device: str, worker: str) -> bool:
        """Claim a queued job for a worker; False when it was cancelled or already taken."""
        return self._transition(
            job_id, (QUEUED,), status=RUNNING, started_at=utcnow(), device=device, worker=worker,
            attempts=JobRow.attempts + 1,
        )

    def record_epoch(self, job_id: str, metrics: EpochMetrics) -> None:
        with self.db.session() as session, session.begin():
            session.merge(EpochRow(job_id=job_id, **metrics.__dict__))

    def succeed(self, job_id: str, model_id: str) -> None:
        self._transition(job_id, (RUNNING,), status=SUCCEEDED, finished_at=utcnow(), model_id=model_id)

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._transition(
            job_id, (QUEUED, RUNNING), status=FAILED, finished_at=utcnow(), error_code=code, error_message=message
        )

    def mark_cancelled(self, job_id: str) -> None:
        self._transition(job_id, (QUEUED, RUNNING), status=CANCELLED, finished_at=utcnow())

    def cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is asked to stop at its next step."""
        job = self.get(job_id)
        if job.status in FINISHED:
            raise Conflict(f"job '{job_id}' is already {job.status}; only queued or running jobs can be cancelled")
        if not self._transition(job_id, (QUEUED,), status=CANCELLED, finished_at=utcnow(), cancel_requested=True):
            self._transition(job_id, (RUNNING,), cancel_requested=True)
        return self.get(job_id)

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.db.session() as session:
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))
