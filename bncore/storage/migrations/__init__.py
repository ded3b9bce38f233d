"""Alembic migrations of the job and model tables, applied with `upgrade_database(url)`."""

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade_database(url: str) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    command.upgrade(alembic_config(url), "head")
