"""The Alembic migrations build exactly the schema the code maps, on an empty database of each kind."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from bncore.storage.database import Base
from bncore.storage.migrations import upgrade_database
from tests.support.servers import fresh_postgres_database

pytestmark = pytest.mark.own_backends  # PostgreSQL where the distributed run names one


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    admin_url = os.environ.get("TEST_POSTGRES_URL")
    if admin_url is None:
        pytest.skip("needs TEST_POSTGRES_URL (a PostgreSQL server; the distributed run sets it)")
    with fresh_postgres_database(admin_url) as url:
        yield url


def test_migrating_an_empty_database_gives_the_mapped_schema(empty_database: str) -> None:
    upgrade_database(empty_database)
    upgrade_database(empty_database)  # a second run finds nothing to do
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert context.get_current_revision() is not None
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()  # before the database is dropped
