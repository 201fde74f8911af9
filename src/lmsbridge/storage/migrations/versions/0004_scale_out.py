"""scale-out: the StackOne rate budget shared across processes (one row per API key, and who drew
from it), and every process's event counters for the system-wide ledger

New tables only: existing rows are untouched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_budget",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("next_slot", sa.Float(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_rate_budget")),
    )
    op.create_table(
        "rate_budget_holders",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("claimed_total", sa.Integer(), nullable=False),
        sa.Column("first_claim_at", sa.Float(), nullable=False),
        sa.Column("last_claim_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "holder", name=op.f("pk_rate_budget_holders")),
    )
    op.create_table(
        "ledger_counts",
        sa.Column("process", sa.String(length=128), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("process", "stage", name=op.f("pk_ledger_counts")),
    )


def downgrade() -> None:
    op.drop_table("ledger_counts")
    op.drop_table("rate_budget_holders")
    op.drop_table("rate_budget")
