"""Each epoch's activation probes, for jobs with `training.track_activations`; an experiment's preset and claim.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_epochs") as epochs:
        epochs.add_column(sa.Column("activations", sa.JSON(), nullable=True))
    with op.batch_alter_table("experiments") as experiments:
        experiments.add_column(sa.Column("preset", sa.String(64), nullable=True))
        experiments.add_column(sa.Column("claim", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as experiments:
        experiments.drop_column("claim")
        experiments.drop_column("preset")
    with op.batch_alter_table("job_epochs") as epochs:
        epochs.drop_column("activations")
