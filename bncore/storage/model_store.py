"""Model records: what a trained model is (spec, dataset, metrics); its weights live in the ArtifactStore."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from bncore.errors import ModelNotFound
from bncore.naming import default_name
from bncore.specs import JobSpec
from bncore.storage.database import Database, JobRow, ModelRow, utcnow
from bncore.storage.job_store import dataset_is
from bncore.storage.pagination import newest_first
from bncore.storage.records import record_from_row


@dataclass(frozen=True)
class ModelRecord:
    id: str
    job_id: str
    created_at: datetime
    spec: JobSpec
    final_metrics: dict[str, Any]
    parameter_count: int
    artifact_sha256: str
    owner: str | None
    parent_id: str | None
    name: str = ""

    @classmethod
    def from_row(cls, row: ModelRow) -> "ModelRecord":
        return record_from_row(cls, row, spec=JobSpec.model_validate(row.spec), name=row.name or default_name(row.spec))


def new_model_id() -> str:
    return f"model_{uuid.uuid4().hex}"


class ModelStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def add(
        self,
        model_id: str,
        job_id: str,
        spec: JobSpec,
        final_metrics: dict[str, Any],
        parameter_count: int,
        artifact_sha256: str,
        owner: str | None,
        parent_id: str | None = None,
    ) -> ModelRecord:
        """The model takes its job's name."""
        row = ModelRow(
            id=model_id,
            job_id=job_id,
            created_at=utcnow(),
            spec=spec.model_dump(mode="json"),
            final_metrics=final_metrics,
            parameter_count=parameter_count,
            artifact_sha256=artifact_sha256,
            owner=owner,
            parent_id=parent_id,
        )
        with self.db.session() as session, session.begin():
            row.name = session.scalar(select(JobRow.name).where(JobRow.id == job_id))
            session.add(row)
        return ModelRecord.from_row(row)

    def get(self, model_id: str, owner: str | None = None) -> ModelRecord:
        """A model; with `owner`, only if it is theirs (ModelNotFound otherwise, as for a missing one)."""
        with self.db.session() as session:
            row = session.get(ModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise ModelNotFound(model_id)
            return ModelRecord.from_row(row)

    def exists(self, model_id: str) -> bool:
        """Whether the model is stored, whoever owns it."""
        with self.db.session() as session:
            return session.get(ModelRow, model_id) is not None

    def page(
        self,
        limit: int,
        cursor: str | None,
        owner: str | None = None,
        *,
        dataset: str | None = None,
        job_id: str | None = None,
    ) -> tuple[list[ModelRecord], str | None]:
        """Newest first; only models trained on `dataset` (a built-in's name or an upload's id), or by
        the job `job_id`, for those given."""
        filters = []
        if dataset is not None:
            filters.append(dataset_is(ModelRow.spec, dataset))
        if job_id is not None:
            filters.append(ModelRow.job_id == job_id)
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, ModelRow, limit, cursor, owner, filters)
            return [ModelRecord.from_row(row) for row in rows], next_cursor

    def delete(self, model_id: str, owner: str | None = None) -> None:
        with self.db.session() as session, session.begin():
            row = session.get(ModelRow, model_id)
            if row is None or (owner is not None and row.owner != owner):
                raise ModelNotFound(model_id)
            session.delete(row)
