"""Idempotency keys for experiments, as jobs have them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as experiments:
        experiments.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        experiments.add_column(sa.Column("request_sha256", sa.String(64), nullable=True))
        experiments.create_unique_constraint("uq_experiments_owner_idempotency_key", ["owner", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("experiments") as experiments:
        experiments.drop_constraint("uq_experiments_owner_idempotency_key", type_="unique")
        experiments.drop_column("request_sha256")
        experiments.drop_column("idempotency_key")
