"""The built-in datasets jobs can train on."""

from fastapi import APIRouter

from bncore.datasets import list_datasets
from service.auth import Caller
from service.schemas import DatasetList, DatasetOut, error_responses

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=error_responses(401))


@router.get("", response_model=DatasetList)
def read_datasets(caller: Caller) -> DatasetList:
    return DatasetList(items=[DatasetOut.from_info(info) for info in list_datasets()])
