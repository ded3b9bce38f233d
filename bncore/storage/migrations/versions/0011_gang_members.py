"""Jobs spanning several workers: the rendezvous endpoint member 0 publishes, and the members of each attempt.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("rendezvous_endpoint", sa.String(255), nullable=True))
    op.create_table(
        "job_gang_members",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("member", sa.Integer(), primary_key=True),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.UniqueConstraint("job_id", "attempt", "worker", name="uq_job_gang_members_worker"),
    )


def downgrade() -> None:
    op.drop_table("job_gang_members")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("rendezvous_endpoint")
