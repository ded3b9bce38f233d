"""Datasets jobs can train on: the built-in ones, and the caller's uploads (CSV or NPZ files)."""

from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from bncore.data.builtin import list_datasets
from bncore.data.uploads import UploadLimits, parse_upload
from bncore.free_text import ONE_LINE, TEXT
from bncore.settings import from_settings
from bncore.storage.dataset_store import DatasetStore
from service.auth import Caller, Trainer
from service.deps import ServicesDep
from service.media_types import require_media_type
from service.schemas import DatasetList, DatasetOut, error_responses

UPLOAD_PATH = "/v1/datasets"
FORM_FIELDS_BYTES = 2**20  # room in an upload's body for the multipart headers and the other fields

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401))


require_multipart = require_media_type("multipart/form-data")


def uploads(services: ServicesDep) -> DatasetStore:
    store = services.datasets.uploads
    assert store is not None, "build_services gives the catalog a store"
    return store


UploadsDep = Annotated[DatasetStore, Depends(uploads)]


@router.get("", response_model=DatasetList)
def read_datasets(store: UploadsDep, caller: Caller) -> DatasetList:
    """The built-in datasets, then the caller's uploads (an admin's: everyone's), oldest first."""
    builtins = [DatasetOut.from_info(info) for info in list_datasets()]
    return DatasetList(items=builtins + [DatasetOut.from_record(r) for r in store.list(caller.owner_filter)])


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    dependencies=[Depends(require_multipart)],
    responses=error_responses(403, 413, 415, 422),
)
def upload_dataset(
    file: Annotated[UploadFile, File(description="a .csv (numeric columns, optional header) or .npz (arrays x, y)")],
    response: Response,
    services: ServicesDep,
    store: UploadsDep,
    caller: Trainer,
    name: Annotated[
        str | None,
        Form(min_length=1, max_length=255, pattern=ONE_LINE, description="a label for people; default: the file's name"),
    ] = None,
    description: Annotated[str, Form(max_length=2000, pattern=TEXT)] = "",
    label_column: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=255,
            pattern=ONE_LINE,
            description="CSV only: the label column's header name, or its 0-based index; default: the last column",
        ),
    ] = None,
) -> DatasetOut:
    """Upload a dataset to train jobs on as `{"dataset": {"id": ...}}`. Labels are whole numbers 0..K-1, each class
    present; samples are finite numbers. The file is checked whole, then stored as float32 samples and int64 labels
    under its sha256."""
    settings = services.settings
    content = file.file.read(settings.max_upload_bytes + 1)
    parsed = parse_upload(content, file.filename, label_column, from_settings(UploadLimits, settings))
    record = store.add(parsed, caller.owner, name or _default_name(file.filename), description)
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return DatasetOut.from_record(record)


def _default_name(filename: str | None) -> str:
    printable = "".join(c for c in PurePath(filename or "").name if c.isprintable())
    return printable[:255] or "upload"


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(404, 422))
def read_dataset(dataset_id: str, store: UploadsDep, caller: Caller) -> DatasetOut:
    """An uploaded dataset's record (built-ins are listed by GET /v1/datasets)."""
    return DatasetOut.from_record(store.get(dataset_id, caller.owner_filter))


@router.delete("/{dataset_id}", status_code=204, responses=error_responses(403, 404, 422))
def delete_dataset(dataset_id: str, store: UploadsDep, caller: Trainer) -> Response:
    """Delete an upload. Models trained on it keep serving (they hold their own weights and input
    standardisation); jobs still waiting for it fail as `dataset_unavailable`."""
    store.delete(dataset_id, caller.owner_filter)
    return Response(status_code=204)
