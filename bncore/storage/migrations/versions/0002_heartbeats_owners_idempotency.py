"""Heartbeats and resumption for lost workers, owners for API keys, idempotency keys.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        jobs.add_column(sa.Column("resumed_from_epoch", sa.Integer(), nullable=True))
        jobs.add_column(sa.Column("owner", sa.String(255), nullable=True))
        jobs.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        jobs.add_column(sa.Column("request_sha256", sa.String(64), nullable=True))
        jobs.create_index("ix_jobs_owner", ["owner"])
        jobs.create_unique_constraint("uq_jobs_owner_idempotency_key", ["owner", "idempotency_key"])
    with op.batch_alter_table("models") as models:
        models.add_column(sa.Column("owner", sa.String(255), nullable=True))
        models.create_index("ix_models_owner", ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("models") as models:
        models.drop_index("ix_models_owner")
        models.drop_column("owner")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("uq_jobs_owner_idempotency_key", type_="unique")
        jobs.drop_index("ix_jobs_owner")
        for column in ("request_sha256", "idempotency_key", "owner", "resumed_from_epoch", "heartbeat_at"):
            jobs.drop_column(column)
