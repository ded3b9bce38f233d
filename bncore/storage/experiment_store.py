"""Experiments as stored: a name, a target, and each variant's job id."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bncore.errors import Conflict, RecordNotFound
from bncore.storage.database import Database, ExperimentRow, utcnow
from bncore.storage.job_store import new_job_row
from bncore.storage.pagination import newest_first


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    owner: str | None
    created_at: datetime
    target_accuracy: float | None
    variants: list[dict[str, str]]  # [{"name", "job_id"}]
    preset: str | None = None
    claim: dict[str, Any] | None = None  # {"statement", "held", "evidence"}, stored once judged

    @classmethod
    def from_row(cls, row: ExperimentRow) -> "Experiment":
        return cls(row.id, row.name, row.owner, row.created_at, row.target_accuracy, row.variants, row.preset, row.claim)


class ExperimentNotFound(RecordNotFound, code="experiment_not_found", record="experiment"): ...


class ExperimentStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def earlier(self, owner: str, idempotency_key: str, request_sha256: str) -> Experiment | None:
        """The experiment a request with this key made before; Conflict when that request had another body."""
        with self.db.session() as session:
            row = session.scalar(
                select(ExperimentRow).where(ExperimentRow.owner == owner, ExperimentRow.idempotency_key == idempotency_key)
            )
        if row is None:
            return None
        if row.request_sha256 != request_sha256:
            raise Conflict(f"Idempotency-Key '{idempotency_key}' was used for a different request")
        return Experiment.from_row(row)

    def create(
        self,
        name: str,
        target_accuracy: float | None,
        variants: Sequence[tuple[str, dict[str, Any]]],
        owner: str,
        request_sha256: str,
        idempotency_key: str | None = None,
        preset: str | None = None,
    ) -> tuple[Experiment, bool]:
        """The experiment and a queued job per (variant name, planned spec), all in one transaction, or none of them.

        With an `idempotency_key` seen before, the experiment it made; True when new.
        """
        if idempotency_key is not None and (earlier := self.earlier(owner, idempotency_key, request_sha256)):
            return earlier, False
        jobs = [new_job_row(spec, owner, name=f"{name}/{variant}") for variant, spec in variants]
        row = ExperimentRow(
            id=f"exp_{uuid.uuid4().hex}",
            name=name,
            owner=owner,
            created_at=utcnow(),
            target_accuracy=target_accuracy,
            variants=[{"name": variant, "job_id": job.id} for (variant, _), job in zip(variants, jobs, strict=True)],
            idempotency_key=idempotency_key,
            request_sha256=request_sha256,
            preset=preset,
        )
        try:
            with self.db.session() as session, session.begin():
                session.add_all([*jobs, row])
        except IntegrityError:
            # The same key raced in from another request: answer as if it had come first.
            if idempotency_key is None or (earlier := self.earlier(owner, idempotency_key, request_sha256)) is None:
                raise
            return earlier, False
        return self.get(row.id), True

    def get(self, experiment_id: str, owner: str | None = None) -> Experiment:
        with self.db.session() as session:
            row = session.get(ExperimentRow, experiment_id)
            if row is None or (owner is not None and row.owner != owner):
                raise ExperimentNotFound(experiment_id)
            return Experiment.from_row(row)

    def record_claim(self, experiment_id: str, claim: dict[str, Any]) -> None:
        """A finished preset experiment's verdict; its variants have ended, so it never changes."""
        with self.db.session() as session, session.begin():
            session.execute(update(ExperimentRow).where(ExperimentRow.id == experiment_id).values(claim=claim))

    def page(self, limit: int, cursor: str | None, owner: str | None = None) -> tuple[list[Experiment], str | None]:
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, ExperimentRow, limit, cursor, owner)
            return [Experiment.from_row(row) for row in rows], next_cursor
