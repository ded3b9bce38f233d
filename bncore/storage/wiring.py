"""The one place the stores are built from settings, for the API and the workers alike."""

from dataclasses import dataclass

from bncore.data.catalog import DatasetCatalog
from bncore.settings import Settings
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.database import Database
from bncore.storage.dataset_store import DatasetStore
from bncore.storage.experiment_store import ExperimentStore
from bncore.storage.job_store import JobStore
from bncore.storage.model_store import ModelStore


@dataclass(frozen=True)
class Stores:
    database: Database
    jobs: JobStore
    models: ModelStore
    experiments: ExperimentStore
    datasets: DatasetCatalog  # the built-in datasets and the uploaded ones
    artifacts: ArtifactStore  # model weights
    checkpoints: ArtifactStore  # running jobs' epoch checkpoints


def build_stores(settings: Settings) -> Stores:
    """Every store on the database and artifact folders `settings` name (the folders are created here)."""
    database = Database(settings.resolved_database_url)
    return Stores(
        jobs=JobStore(database),
        models=ModelStore(database),
        artifacts=ArtifactStore(settings.resolved_artifacts_dir),
        checkpoints=ArtifactStore(settings.resolved_checkpoints_dir),
        datasets=DatasetCatalog(DatasetStore.in_artifacts(database, settings.resolved_artifacts_dir)),
        experiments=ExperimentStore(database),
        database=database,
    )
