"""Wall-clock seconds of each epoch; 0 for epochs recorded before.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_epochs") as job_epochs:
        job_epochs.add_column(sa.Column("seconds", sa.Float(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("job_epochs") as job_epochs:
        job_epochs.drop_column("seconds")
