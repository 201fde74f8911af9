"""completion cycles: ``records.cycle_at``, when the platform assignment a completion is for was created

A training assigned again (a yearly one: a new platform assignment after the person completed
the last) is a new cycle: its completion is written even when it is no better than the one
written for the earlier cycle, which stays in the LMS. Existing records get no cycle (unknown
counts as the oldest), so nothing already written is written again; the next cycle's completion
is told apart by its assignment's creation time. The downgrade drops the column.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("cycle_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("cycle_at")
