"""Recalibration jobs making model versions with a parent, and experiments grouping jobs.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("recalibration", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as models:
        models.add_column(sa.Column("parent_id", sa.String(64), nullable=True))
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("target_accuracy", sa.Float(), nullable=True),
        sa.Column("variants", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiments")
    with op.batch_alter_table("models") as models:
        models.drop_column("parent_id")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("recalibration")
