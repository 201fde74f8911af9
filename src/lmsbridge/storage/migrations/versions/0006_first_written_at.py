"""first write per sync row: ``sync_state.first_written_at``, never moved later

The LMS pass reads StackOne's lists from a day before lmsbridge's first write on an account. That
was ``min(synced_at)``, but ``synced_at`` moves on with every sync that ends synced (a completion
after its assignment, an update that writes nothing), so once every record had a later event the
first writes fell outside the window, looked missing and were written again. The new column is
set once, when a write is first recorded, and never moved.

Backfill: a row with a write recorded (or synced once) gets the earlier of its ``synced_at`` and
its record's ``received_at`` (the first event of the record came before any write of it). So an
account's earliest is never later than the ``min(synced_at)`` used before, and usually near the
real first write, which ``synced_at`` had lost. The downgrade drops the column.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("first_written_at", sa.DateTime(timezone=True), nullable=True))
    sync_state = sa.table(
        "sync_state",
        sa.column("record_id"),
        sa.column("assignment_created"),
        sa.column("completion_created"),
        sa.column("synced_at"),
        sa.column("first_written_at"),
    )
    records = sa.table("records", sa.column("id"), sa.column("received_at"))
    received = sa.select(records.c.received_at).where(records.c.id == sync_state.c.record_id).scalar_subquery()
    earlier = sa.case(
        (sa.and_(sync_state.c.synced_at.is_not(None), sync_state.c.synced_at < received), sync_state.c.synced_at),
        else_=received,
    )
    written = sa.or_(
        sync_state.c.assignment_created.is_(True),
        sync_state.c.completion_created.is_(True),
        sync_state.c.synced_at.is_not(None),
    )
    op.get_bind().execute(sync_state.update().where(written).values(first_written_at=earlier))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("first_written_at")
