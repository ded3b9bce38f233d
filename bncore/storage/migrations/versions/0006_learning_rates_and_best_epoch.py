"""Each epoch's learning rate and a job's best epoch under early stopping; null for what came before.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_epochs") as job_epochs:
        job_epochs.add_column(sa.Column("learning_rate", sa.Float(), nullable=True))
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("best_epoch", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("best_epoch")
    with op.batch_alter_table("job_epochs") as job_epochs:
        job_epochs.drop_column("learning_rate")
