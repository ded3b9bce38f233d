"""A worker's stores on a fresh database and artifact folder, for stories that run jobs in this process."""

from pathlib import Path

from bncore.settings import Settings
from bncore.storage.migrations import upgrade_database
from bncore.storage.wiring import Stores, build_stores


def stores_in(folder: Path) -> Stores:
    settings = Settings(data_dir=folder)
    upgrade_database(settings.resolved_database_url)
    return build_stores(settings)
