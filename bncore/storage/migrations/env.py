from alembic import context
from sqlalchemy import create_engine

from bncore.storage.database import Base

url = context.config.attributes["url"]
engine = create_engine(url)
with engine.connect() as connection:
    # Batch mode lets SQLite, which cannot ALTER most things, take the same migrations as PostgreSQL.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
