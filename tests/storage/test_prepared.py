"""Statements run on SQLite's driver (storage.prepared) behave as the same statements run through Core."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, StatementError

from lmsbridge.storage.prepared import Prepared
from lmsbridge.storage.tables import inbox, metadata, records, sync_state

PLUS_TWO = timezone(timedelta(hours=2))


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = create_engine(f"sqlite:///{tmp_path / 'prepared.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def record(**changes: Any) -> dict[str, Any]:
    row = {
        "source": "exec",
        "assignment_id": "a1",
        "person_key": "jane@acme.example",
        "platform": "exec",
        "learning_object_ref": "exec:scenario:1",
        "title": "Cold call",
        "title_at": datetime(2026, 12, 2, 10, 0, tzinfo=PLUS_TWO),
        "rank": 2,
        "assigned_at": datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC),
        "due_date": None,
        "progress": 0.5,
        "completed_at": None,
        "passed": False,
        "score": 71.5,
        "version": 1,
        "received_at": datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
        "updated_at": datetime(2026, 12, 2, 8, 0, 1, tzinfo=UTC),
    }
    return row | changes


def test_a_row_written_on_the_driver_reads_back_through_core_as_core_would_have_written_it(conn: Connection) -> None:
    """Times (an offset becomes the same instant in UTC), booleans, floats and JSON take the same form."""
    add = Prepared(insert(records).returning(records.c.id))
    rid = add.scalar(conn, record())
    conn.execute(insert(records), record(person_key="joe@acme.example"))
    Prepared(insert(inbox)).execute(
        conn,
        {
            "source": "exec",
            "message_id": "m1",
            "event_type": "assignment.created",
            "received_at": datetime(2026, 12, 2, tzinfo=UTC),
            "processed_at": datetime(2026, 12, 2, tzinfo=UTC),
            "record_ids": [rid, 7],
        },
    )

    ours, theirs = conn.execute(select(records).order_by(records.c.id)).mappings().all()
    assert ours["title_at"] == datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    assert ours["title_at"].tzinfo is not None
    assert ours["passed"] is False
    assert {k: v for k, v in ours.items() if k not in ("id", "person_key")} == {
        k: v for k, v in theirs.items() if k not in ("id", "person_key")
    }
    assert conn.execute(select(inbox.c.record_ids)).scalar() == [rid, 7]
    # Stored text is identical, so SQL comparisons between the two paths' rows hold.
    raw = conn.exec_driver_sql("SELECT assigned_at, title_at FROM records ORDER BY id").all()
    assert raw[0] == raw[1]


def test_a_row_read_on_the_driver_is_the_row_core_reads(conn: Connection) -> None:
    """Names (a repeated one gets Core's ``_1``), types and None are those of Core's mappings."""
    conn.execute(insert(records), record(passed=True, due_date=datetime(2027, 1, 1, tzinfo=UTC)))
    conn.execute(
        insert(sync_state),
        {
            "record_id": 1,
            "account": "acc",
            "status": "pending",
            "assignment_created": True,
            "completion_created": False,
            "attempts": 0,
            "updated_at": datetime(2026, 12, 2, 9, tzinfo=UTC),
        },
    )
    joined = select(records, sync_state).join(sync_state, sync_state.c.record_id == records.c.id)
    joined = joined.where(records.c.id == bindparam("b_id"))

    ours = Prepared(joined).first(conn, {"b_id": 1})

    assert ours == dict(conn.execute(joined, {"b_id": 1}).mappings().one())
    assert ours is not None
    assert ours["updated_at_1"] == datetime(2026, 12, 2, 9, tzinfo=UTC)
    assert ours["assignment_created"] is True
    assert Prepared(joined).first(conn, {"b_id": 2}) is None


def test_an_update_counts_the_rows_it_changed_with_values_written_into_the_statement(conn: Connection) -> None:
    """The SET comes from the parameters' names; a literal in the WHERE (``status = 'pending'``) still applies."""
    conn.execute(insert(records), [record(), record(person_key="joe@acme.example")])
    rows = [
        {
            "record_id": rid,
            "account": "acc",
            "status": status,
            "assignment_created": False,
            "completion_created": False,
            "attempts": 0,
            "updated_at": datetime(2026, 12, 2, tzinfo=UTC),
        }
        for rid, status in ((1, "pending"), (2, "synced"))
    ]
    Prepared(insert(sync_state)).execute_many(conn, rows)
    pending = Prepared(update(sync_state).where(sync_state.c.status == "pending"))

    changed = pending.execute(conn, {"attempts": 3, "last_error": "timeout"})

    assert changed == 1
    assert conn.execute(select(sync_state.c.record_id, sync_state.c.attempts)).all() == [(1, 3), (2, 0)]


def test_the_database_refusing_a_row_raises_sqlalchemys_error_without_the_values(conn: Connection) -> None:
    """A constraint broken on the driver is IntegrityError, as through Core, and its text quotes no value."""
    add = Prepared(insert(inbox))
    row = {
        "source": "exec",
        "message_id": "m1",
        "event_type": "assignment.created",
        "received_at": datetime(2026, 12, 2, tzinfo=UTC),
        "processed_at": datetime(2026, 12, 2, tzinfo=UTC),
        "record_ids": ["secret-value-xyz"],
    }
    add.execute(conn, row)

    with pytest.raises(IntegrityError) as refused:
        add.execute(conn, row)

    assert "UNIQUE" in str(refused.value.orig)
    assert "secret-value-xyz" not in str(refused.value)


def test_a_value_its_type_cannot_take_raises_as_core_does(conn: Connection) -> None:
    """A time past year 9999 in UTC fails in the converter: StatementError around the OverflowError."""
    add = Prepared(insert(records))
    late = record(due_date=datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))))

    with pytest.raises(StatementError) as ours:
        add.execute(conn, late)
    with pytest.raises(StatementError) as core:
        conn.execute(insert(records), late)

    assert type(ours.value.orig) is type(core.value.orig) is OverflowError


def test_none_is_converted_as_core_converts_it(conn: Connection) -> None:
    """A None goes through the type's converter like any value (a JSON None is stored as Core stores it)."""
    documents = Table("documents", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON))
    documents.create(conn)

    Prepared(insert(documents)).execute(conn, {"id": 1, "doc": None})
    conn.execute(insert(documents), {"id": 2, "doc": None})

    ours, core = conn.exec_driver_sql("SELECT doc FROM documents ORDER BY id").all()
    assert ours == core
    assert Prepared(select(documents.c.doc).where(documents.c.id == 1)).first(conn, {}) == {"doc": None}


def test_a_missing_parameter_is_refused_before_the_database_sees_the_statement(conn: Connection) -> None:
    """A statement run without a value it needs fails as through Core (StatementError), nothing written."""
    add = Prepared(insert(records).returning(records.c.id))
    add.scalar(conn, record())
    touch = Prepared(update(records).where(records.c.id == bindparam("b_id")))

    with pytest.raises(StatementError):
        touch.execute(conn, {"title": "Renamed"})

    assert conn.execute(select(records.c.title)).scalar() == "Cold call"


def test_an_expanding_in_runs_through_core(conn: Connection) -> None:
    """A statement the driver path cannot take (an IN over a list) still runs, with the same result."""
    conn.execute(insert(records), [record(), record(person_key="joe@acme.example"), record(person_key="x@y.z")])
    among = Prepared(select(records.c.person_key).where(records.c.id.in_(bindparam("ids", expanding=True))))

    assert among.scalar(conn, {"ids": [2, 3]}) == "joe@acme.example"
    assert among.first(conn, {"ids": [9]}) is None


OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
TIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),  # naive: taken as UTC
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(when=TIMES)
@example(when=datetime(2026, 12, 4, 11, 0, 0, 0, tzinfo=UTC))  # no microseconds: still six digits
@example(when=datetime(999, 1, 1, 0, 0))  # a year of three digits: still four
def test_a_time_is_stored_as_the_text_core_stores_for_it(conn: Connection, when: datetime) -> None:
    """The driver path's one-step time text is the text Core writes, byte for byte, and reads back the same."""
    conn.exec_driver_sql("DELETE FROM records")  # one example's rows at a time
    add = Prepared(insert(records).returning(records.c.id))
    ours = add.scalar(conn, record(person_key="ours@x", assigned_at=when))
    core = conn.execute(insert(records).returning(records.c.id), record(person_key="core@x", assigned_at=when)).scalar()

    stored = {int(rid): text for rid, text in conn.exec_driver_sql("SELECT id, assigned_at FROM records")}
    assert stored[int(ours)] == stored[int(core or 0)]
    read = conn.execute(select(records.c.assigned_at).where(records.c.id == ours)).scalar()
    assert read == (when if when.tzinfo is not None else when.replace(tzinfo=UTC))
