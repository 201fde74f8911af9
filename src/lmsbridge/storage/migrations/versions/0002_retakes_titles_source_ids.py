"""retakes, titles, per-source message ids

What was written per (record, account) is kept (result, score, time of the completion) so a
better retake is written again; titles carry the time of their event so the newest wins; the
inbox remembers message ids per source. Existing rows are kept: a written completion is taken
to be the record's current one, message ids keep their source, titles get no time (oldest).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_constraint("pk_inbox", type_="primary")
        batch_op.create_primary_key("pk_inbox", ["source", "message_id"])
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completion_passed", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("completion_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("completion_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("superseded_completion_id", sa.String(length=255), nullable=True))
    # A completion already written is the record's current one (what lmsbridge wrote then).
    records = sa.table("records", sa.column("id"), sa.column("passed"), sa.column("score"), sa.column("completed_at"))
    sync_state = sa.table(
        "sync_state",
        sa.column("record_id"),
        sa.column("completion_created"),
        sa.column("completion_passed"),
        sa.column("completion_score"),
        sa.column("completion_at"),
    )
    mine = records.c.id == sync_state.c.record_id
    op.execute(
        sync_state.update()
        .where(sync_state.c.completion_created.is_(True))
        .values(
            completion_passed=sa.select(sa.func.coalesce(records.c.passed, sa.true())).where(mine).scalar_subquery(),
            completion_score=sa.select(records.c.score).where(mine).scalar_subquery(),
            completion_at=sa.select(records.c.completed_at).where(mine).scalar_subquery(),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.drop_column("superseded_completion_id")
        batch_op.drop_column("completion_at")
        batch_op.drop_column("completion_score")
        batch_op.drop_column("completion_passed")
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.drop_column("title_at")
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_column("title_at")
    # Ids shared by two sources cannot both stay under the old key: keep one of each.
    inbox = sa.table("inbox", sa.column("source"), sa.column("message_id"))
    other = inbox.alias("other")
    op.execute(
        inbox.delete().where(
            sa.exists().where(other.c.message_id == inbox.c.message_id, other.c.source < inbox.c.source)
        )
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_constraint("pk_inbox", type_="primary")
        batch_op.create_primary_key("pk_inbox", ["message_id"])
