"""The Alembic migrations build exactly the schema the code maps, on an empty database."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bncore.storage.database import Base
from bncore.storage.migrations import upgrade_database


def test_migrating_an_empty_database_gives_the_mapped_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade_database(url)
    upgrade_database(url)  # a second run finds nothing to do
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_revision() is not None
        assert compare_metadata(context, Base.metadata) == []
