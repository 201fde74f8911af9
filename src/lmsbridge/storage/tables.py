"""The SQL schema: inbox of message ids, canonical records, per-account sync state, caches.

Migrations in ``storage/migrations`` create exactly this schema; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(255), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("record_ids", JSON, nullable=False),
)
Index("ix_inbox_processed_at", inbox.c.processed_at)

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("assignment_id", String(255), nullable=False),
    Column("person_key", String(320), nullable=False),
    Column("platform", String(32), nullable=False),
    Column("learning_object_ref", String(512), nullable=False),
    Column("title", Text, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("assigned_at", DateTime(timezone=True)),
    Column("due_date", DateTime(timezone=True)),
    Column("progress", Float),
    Column("completed_at", DateTime(timezone=True)),
    Column("passed", Boolean),
    Column("score", Float),
    Column("version", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # One record per person and learning object: the LMS holds one assignment and at most one
    # completion per (account, person, learning object), whatever the platform's assignment ids.
    UniqueConstraint("source", "learning_object_ref", "person_key", name="uq_records_identity"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("record_id", Integer, ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    Column("account", String(255), primary_key=True),
    Column("status", String(16), nullable=False),  # pending | synced | parked | dead
    Column("reason", String(64)),
    Column("assignment_created", Boolean, nullable=False),
    Column("lms_assignment_id", String(255)),
    Column("completion_created", Boolean, nullable=False),
    Column("lms_completion_id", String(255)),
    Column("uncertain_step", String(32)),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("synced_at", DateTime(timezone=True)),
)
Index("ix_sync_state_account_status", sync_state.c.account, sync_state.c.status)

content = Table(
    "content",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("external_reference", String(512), primary_key=True),
    Column("title", Text, nullable=False),
    Column("synced_at", DateTime(timezone=True), nullable=False),
)

directory = Table(
    "directory",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("email", String(320), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text),
    Column("status", Integer),
    Column("since", DateTime(timezone=True)),
    Column("directory_refreshed_at", DateTime(timezone=True)),
    Column("email_filter", String(16)),  # unknown | honoured | ignored
)


# --- reconciliation (times are epoch seconds) --------------------------------------------

reconcile_runs = Table(
    "reconcile_runs",
    metadata,
    Column("source", String(64), primary_key=True),  # a source's name, or "lms:<account>"
    Column("started_at", Float, nullable=False),
    Column("duration", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # finished | stopped
    Column("findings", JSON, nullable=False),
    Column("error", Text),
    Column("last_success_at", Float),
)

reconcile_seen = Table(
    "reconcile_seen",
    metadata,
    # A platform assignment's aggregates when a pass last read its members: unchanged, no detail call.
    Column("source", String(64), primary_key=True),
    Column("assignment_id", String(255), primary_key=True),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("seen_at", Float, nullable=False),
)

reconcile_lease = Table(
    "reconcile_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("until", Float, nullable=False),
)
Index("ix_records_source_assignment", records.c.source, records.c.assignment_id)
