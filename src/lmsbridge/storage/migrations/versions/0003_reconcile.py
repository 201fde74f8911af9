"""reconciliation: last pass per source, aggregates seen, the periodic pass's lease

New tables only (and an index on records by platform assignment): existing rows are untouched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("last_success_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_reconcile_runs")),
    )
    op.create_table(
        "reconcile_seen",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("assignment_id", sa.String(length=255), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("source", "assignment_id", name=op.f("pk_reconcile_seen")),
    )
    op.create_table(
        "reconcile_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_reconcile_lease")),
    )
    op.create_index("ix_records_source_assignment", "records", ["source", "assignment_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_records_source_assignment", table_name="records")
    op.drop_table("reconcile_lease")
    op.drop_table("reconcile_seen")
    op.drop_table("reconcile_runs")
