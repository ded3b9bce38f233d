"""A human name on jobs and models; rows from before keep NULL and are named from their spec when read.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "models"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("name", sa.String(255), nullable=True))


def downgrade() -> None:
    for table in ("jobs", "models"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("name")
