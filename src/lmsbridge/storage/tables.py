"""The SQL schema: inbox of message ids, canonical records, per-account sync state, caches.

Migrations in ``storage/migrations`` create exactly this schema; a test compares the two.
Every time is a :class:`UtcDateTime`: SQLite keeps no offset, so times are stored in UTC and
read back as aware UTC instants on both databases.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

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
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A ``DateTime(timezone=True)`` that keeps the instant on every database.

    Stores UTC (an aware time is converted, a naive one is taken as UTC) and reads back aware
    UTC: SQLite would otherwise drop the offset and shift ``08:00-07:00`` to ``08:00Z``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_utc_binder(core: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """What Core binds for a :class:`UtcDateTime` on SQLite, made in one step (issue 15).

    Core runs ``process_bind_param`` (to UTC), then SQLite's ``DATETIME`` text (``%``-formatting a
    dict of seven fields): ~10 times an event on the worker's hot path, 3.5 % of its instructions.
    ``isoformat`` makes the same text. ``core`` (Core's own processor) takes whatever is not a plain
    ``datetime``: ``None``, a subclass, a wrong type (its error as before).
    """

    def bind(value: Any) -> Any:
        if type(value) is not datetime:
            return core(value)
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat(" ", "microseconds")[:26]  # "YYYY-MM-DD HH:MM:SS.ffffff", no offset

    return bind


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
    # Per source: two platforms (or tenants) may use the same ids for different events.
    Column("source", String(64), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("processed_at", UtcDateTime(), nullable=False),
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
    Column("title_at", UtcDateTime()),  # time of the event that carried the title: the newest wins
    Column("rank", Integer, nullable=False),
    Column("assigned_at", UtcDateTime()),
    Column("due_date", UtcDateTime()),
    Column("progress", Float),
    Column("completed_at", UtcDateTime()),
    Column("passed", Boolean),
    Column("score", Float),
    Column("cycle_at", UtcDateTime()),  # creation of the platform assignment the completion is for
    Column("version", Integer, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
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
    # The completion written (a retake is written again only when its result is better).
    Column("completion_passed", Boolean),
    Column("completion_score", Float),
    Column("completion_at", UtcDateTime()),
    Column("superseded_completion_id", String(255)),  # replaced by a retake, not (yet) deleted
    Column("uncertain_step", String(32)),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("synced_at", UtcDateTime()),  # the last sync that ended synced (moves on with every one)
    # When a write of the row was first recorded: never moved later, so the LMS pass's window
    # (a day before the account's earliest) still holds every write lmsbridge made there.
    Column("first_written_at", UtcDateTime()),
)
Index("ix_sync_state_account_status", sync_state.c.account, sync_state.c.status)

content = Table(
    "content",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("external_reference", String(512), primary_key=True),
    Column("title", Text, nullable=False),
    Column("title_at", UtcDateTime()),
    Column("synced_at", UtcDateTime(), nullable=False),
)

directory = Table(
    "directory",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("email", String(320), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account", String(255), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("reason", Text),
    Column("status", Integer),
    Column("since", UtcDateTime()),
    Column("directory_refreshed_at", UtcDateTime()),
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

# --- the StackOne rate budget shared by every process using one API key (issue 14) ------

rate_budget = Table(
    "rate_budget",
    metadata,
    # One row per API key: ``key_id`` is a digest, never the key. Times are epoch seconds on the
    # database's clock (PostgreSQL's; on SQLite the one host's).
    Column("key_id", String(64), primary_key=True),
    Column("next_slot", Float, nullable=False),  # the earliest moment not yet given to any process
    Column("paused_until", Float, nullable=False),  # a 429's Retry-After, for every process
)

rate_budget_holders = Table(
    "rate_budget_holders",
    metadata,
    # Who drew from the budget, for ``lmsbridge status`` (rows idle for an hour are pruned).
    Column("key_id", String(64), primary_key=True),
    Column("holder", String(128), primary_key=True),
    Column("claimed_total", Integer, nullable=False),
    Column("first_claim_at", Float, nullable=False),
    Column("last_claim_at", Float, nullable=False),
)

# --- the delivery ledger across processes (issue 14) -------------------------------------

ledger_counts = Table(
    "ledger_counts",
    metadata,
    # Each process's own event counters (lmsbridge_events_total by stage), written every few
    # seconds and at a clean stop, so ``lmsbridge status`` can add up the whole system's ledger.
    Column("process", String(128), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),  # epoch seconds
    Column("final", Boolean, nullable=False),  # written at a clean stop: nothing more will come
)
