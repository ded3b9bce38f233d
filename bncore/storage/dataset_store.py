"""Uploaded datasets: a record in the database, the samples as a safetensors file checked on every load."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from sqlalchemy import select

from bncore.data.builtin import Dataset, DatasetInfo
from bncore.data.uploads import ParsedDataset
from bncore.errors import ArtifactUnavailable, DatasetNotFound, DatasetUnavailable
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database, DatasetRow, utcnow
from bncore.storage.records import record_from_row


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    owner: str | None
    created_at: datetime
    name: str
    description: str
    format: str
    input_shape: tuple[int, ...]
    num_classes: int
    num_samples: int
    sha256: str

    @classmethod
    def from_row(cls, row: DatasetRow) -> "DatasetRecord":
        return record_from_row(cls, row, input_shape=tuple(row.input_shape))

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(self.name, self.description, self.input_shape, self.num_classes, self.num_samples)


def new_dataset_id() -> str:
    return f"ds_{uuid.uuid4().hex}"


class DatasetStore:
    def __init__(self, database: Database, files: ArtifactStore) -> None:
        self.db = database
        self.files = files

    @classmethod
    def in_artifacts(cls, database: Database, artifacts_dir: Path) -> "DatasetStore":
        """The store API and workers share: files in ARTIFACTS_DIR/datasets."""
        return cls(database, ArtifactStore(artifacts_dir / "datasets"))

    def add(self, parsed: ParsedDataset, owner: str | None, name: str, description: str) -> DatasetRecord:
        """File first, then record: no dataset is ever listed without its samples."""
        dataset_id = new_dataset_id()
        tensors = {"x": torch.from_numpy(parsed.samples), "y": torch.from_numpy(parsed.labels)}
        sha256 = self.files.save(dataset_id, tensors, {"format": parsed.format})
        row = DatasetRow(
            id=dataset_id,
            owner=owner,
            created_at=utcnow(),
            name=name,
            description=description,
            format=parsed.format,
            input_shape=list(parsed.input_shape),
            num_classes=parsed.num_classes,
            num_samples=len(parsed.labels),
            sha256=sha256,
        )
        try:
            with self.db.session() as session, session.begin():
                session.add(row)
        except BaseException:
            self.files.delete(dataset_id)
            raise
        return DatasetRecord.from_row(row)

    def get(self, dataset_id: str, owner: str | None = None) -> DatasetRecord:
        """A dataset; with `owner`, only if it is theirs (DatasetNotFound otherwise, as for a missing one)."""
        with self.db.session() as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None or (owner is not None and row.owner != owner):
                raise DatasetNotFound(dataset_id)
            return DatasetRecord.from_row(row)

    def list(self, owner: str | None = None) -> list[DatasetRecord]:
        """Oldest first, only `owner`'s if given."""
        query = select(DatasetRow).order_by(DatasetRow.created_at, DatasetRow.id)
        if owner is not None:
            query = query.where(DatasetRow.owner == owner)
        with self.db.session() as session:
            return [DatasetRecord.from_row(row) for row in session.scalars(query)]

    def delete(self, dataset_id: str, owner: str | None = None) -> None:
        """Record, then file. Models trained on it keep working: they hold their own weights and standardisation."""
        with self.db.session() as session, session.begin():
            row = session.get(DatasetRow, dataset_id)
            if row is None or (owner is not None and row.owner != owner):
                raise DatasetNotFound(dataset_id)
            session.delete(row)
        self.files.delete(dataset_id)

    def load(self, dataset_id: str) -> Dataset:
        """The samples, refused with DatasetUnavailable when deleted, missing or not matching their sha256."""
        try:
            record = self.get(dataset_id)
        except DatasetNotFound:
            raise DatasetUnavailable(f"dataset '{dataset_id}' was deleted") from None
        if not self.files.exists(record.id):
            raise DatasetUnavailable(f"the samples of dataset '{record.id}' are missing from the artifact store")
        try:
            tensors = self.files.load(record.id, record.sha256)
            samples, labels = tensors["x"].numpy(), tensors["y"].numpy()
        except (ArtifactUnavailable, KeyError):
            raise DatasetUnavailable(
                f"the samples of dataset '{record.id}' fail their sha256 check or cannot be read (damaged file)"
            ) from None
        if samples.shape != (record.num_samples, *record.input_shape) or labels.shape != (record.num_samples,):
            raise DatasetUnavailable(f"the samples of dataset '{record.id}' do not match its record")
        features = samples.reshape(record.num_samples, -1)
        return Dataset(info=record.info, features=features, labels=labels)
