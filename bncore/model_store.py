"""Model records: what a trained model is (spec, dataset, metrics); its weights live in the ArtifactStore."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bncore.database import Database, ModelRow, utcnow
from bncore.errors import ModelNotFound
from bncore.pagination import newest_first
from bncore.specs import JobSpec


@dataclass(frozen=True)
class ModelRecord:
    id: str
    job_id: str
    created_at: datetime
    spec: JobSpec
    final_metrics: dict[str, Any]
    parameter_count: int
    artifact_sha256: str

    @classmethod
    def from_row(cls, row: ModelRow) -> "ModelRecord":
        return cls(
            id=row.id, job_id=row.job_id, created_at=row.created_at, spec=JobSpec.model_validate(row.spec),
            final_metrics=row.final_metrics, parameter_count=row.parameter_count, artifact_sha256=row.artifact_sha256,
        )


def new_model_id() -> str:
    return f"model_{uuid.uuid4().hex}"


class ModelStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    def add(
        self, model_id: str, job_id: str, spec: JobSpec, final_metrics: dict[str, Any],
        parameter_count: int, artifact_sha256: str,
    ) -> ModelRecord:
        row = ModelRow(
            id=model_id, job_id=job_id, created_at=utcnow(), spec=spec.model_dump(mode="json"),
            final_metrics=final_metrics, parameter_count=parameter_count, artifact_sha256=artifact_sha256,
        )
        with self.db.session() as session, session.begin():
            session.add(row)
        return ModelRecord.from_row(row)

    def get(self, model_id: str) -> ModelRecord:
        with self.db.session() as session:
            row = session.get(ModelRow, model_id)
            if row is None:
                raise ModelNotFound(model_id)
            return ModelRecord.from_row(row)

    def list(self, limit: int, cursor: str | None) -> tuple[list[ModelRecord], str | None]:
        with self.db.session() as session:
            rows, next_cursor = newest_first(session, ModelRow, limit, cursor)
            return [ModelRecord.from_row(row) for row in rows], next_cursor

    def delete(self, model_id: str) -> None:
        with self.db.session() as session, session.begin():
            row = session.get(ModelRow, model_id)
            if row is None:
                raise ModelNotFound(model_id)
            session.delete(row)
