"""Experiments as stored: a name, a target, and each variant's job id."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from bncore.errors import NotFound
from bncore.storage.database import Database, ExperimentRow, utcnow
from bncore.storage.pagination import newest_first


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    owner: str | None
    created_at: datetime
    target_accuracy: float | None
    variants: list[dict[str, str]]  # [{"name", "job_id"}]

    @classmethod
    def from_row(cls, row: ExperimentRow) -> "Experiment":
        return cls(row.id, row.name, row.owner, row.created_at, row.target_accuracy, row.variants)


class ExperimentNotFound(NotFound):
    code = "experiment_not_found"

    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"no experiment with id '{experiment_id}'")


class ExperimentStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def add(self, name: str, owner: str, target_accuracy: float | None, variants: list[dict[str, str]]) -> Experiment:
        row = ExperimentRow(
            id=f"exp_{uuid.uuid4().hex}",
            name=name,
            owner=owner,
            created_at=utcnow(),
            target_accuracy=target_accuracy,
            variants=variants,
        )
        with self.db.session() as session, session.begin():
            session.add(row)
        return self.get(row.id)

    def get(self, experiment_id: str, owner: str | None = None) -> Experiment:
        with self.db.session() as session:
            row = session.get(ExperimentRow, experiment_id)
            if row is None or (owner is not None and row.owner != owner):
                raise ExperimentNotFound(experiment_id)
            return Experiment.from_row(row)

    def page(self, limit: int, cursor: str | None, owner: str | None = None) -> tuple[list[Experiment], str | None]:
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, ExperimentRow, limit, cursor, owner)
            return [Experiment.from_row(row) for row in rows], next_cursor
