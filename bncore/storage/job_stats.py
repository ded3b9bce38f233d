"""What the job table says about all jobs at once: counts by state, run times, training speed.

Jobs run in worker processes that no API process can watch; the database is what they all share,
so these figures are read from it when someone asks (a metrics scrape), not observed as they happen.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from bncore.storage.database import Database, EpochRow, JobRow, utcnow
from bncore.storage.job_store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED

STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class FinishedRun:
    status: str
    seconds: float  # started_at to finished_at of its last attempt


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    epochs_per_second: float  # epochs finished by its current attempt, over the time since that attempt started


class JobStats:
    def __init__(self, database: Database) -> None:
        self.db = database

    def counts_by_state(self) -> dict[str, int]:
        """Every state, those with no jobs as 0."""
        with self.db.session() as session:
            counted = dict(session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).tuples().all())
        return {state: counted.get(state, 0) for state in STATES}

    def finished_runs(self) -> list[FinishedRun]:
        """Jobs that ran and finished; one cancelled while queued never ran and is left out."""
        query = select(JobRow.status, JobRow.started_at, JobRow.finished_at).where(
            JobRow.status.in_((SUCCEEDED, FAILED, CANCELLED)),
            JobRow.started_at.is_not(None),
            JobRow.finished_at.is_not(None),
        )
        with self.db.session() as session:
            rows = session.execute(query).tuples().all()
        return [FinishedRun(status, max(0.0, (finished - started).total_seconds())) for status, started, finished in rows]

    def running(self, now: datetime | None = None) -> list[RunningJob]:
        now = now or utcnow()
        last_epoch = select(EpochRow.job_id, func.max(EpochRow.epoch).label("epoch")).group_by(EpochRow.job_id).subquery()
        query = (
            select(JobRow.id, JobRow.started_at, JobRow.resumed_from_epoch, last_epoch.c.epoch)
            .outerjoin(last_epoch, last_epoch.c.job_id == JobRow.id)
            .where(JobRow.status == RUNNING, JobRow.started_at.is_not(None))
        )
        with self.db.session() as session:
            rows = session.execute(query).tuples().all()
        jobs = []
        for job_id, started_at, resumed_from, epoch in rows:
            elapsed = (now - started_at).total_seconds()
            epochs = max(0, (epoch or 0) - (resumed_from or 0))
            jobs.append(RunningJob(job_id, epochs / elapsed if elapsed > 0 else 0.0))
        return jobs
