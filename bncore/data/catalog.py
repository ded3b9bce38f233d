"""Where a job's DatasetRef leads: a built-in dataset by name, or an uploaded one by id."""

from bncore.data.builtin import Dataset, DatasetInfo, load_dataset
from bncore.errors import DatasetNotFound, DatasetUnavailable, InvalidField
from bncore.specs import DatasetRef
from bncore.storage.dataset_store import DatasetRecord, DatasetStore


class DatasetCatalog:
    """Built-in datasets, and with a store the uploaded ones; `owner` set: only that owner's uploads."""

    def __init__(self, uploads: DatasetStore | None = None, owner: str | None = None) -> None:
        self.uploads = uploads
        self.owner = owner

    def visible_to(self, owner: str | None) -> "DatasetCatalog":
        """This catalog as a caller sees it (None: an admin, who sees every upload)."""
        return DatasetCatalog(self.uploads, owner)

    def info(self, ref: DatasetRef) -> DatasetInfo:
        """What the dataset holds, from its record; InvalidField names `dataset.name` or `dataset.id`."""
        if ref.name is not None:
            return load_dataset(ref.name).info
        return self._record(ref.field, ref.id).info

    def load(self, ref: DatasetRef) -> Dataset:
        """The samples of either kind; an upload's are checked against its sha256 (DatasetUnavailable)."""
        if ref.name is not None:
            return load_dataset(ref.name)
        if self.uploads is None:
            raise DatasetUnavailable(f"dataset '{ref.id}' is an upload, and this process has no dataset store")
        return self.uploads.load(str(ref.id))

    def _record(self, field: str, dataset_id: str | None) -> DatasetRecord:
        if self.uploads is None or dataset_id is None:
            raise InvalidField(field, "this service keeps no uploaded datasets")
        try:
            return self.uploads.get(dataset_id, self.owner)
        except DatasetNotFound as error:
            raise InvalidField(field, f"{error.message}; see GET /v1/datasets") from None


BUILT_INS = DatasetCatalog()
