"""Revision 0006 gives every sync row written before it a first write no later than what was used."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import records, sync_state

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _record(record_id: int, received_at: datetime) -> dict[str, object]:
    return {
        "id": record_id,
        "source": "acme",
        "assignment_id": f"as-{record_id}",
        "person_key": f"p{record_id}@acme.example",
        "platform": "exec",
        "learning_object_ref": "exec:scenario:a",
        "title": "A",
        "rank": 1,
        "version": 1,
        "received_at": received_at,
        "updated_at": received_at,
    }


def _row(record_id: int, *, assignment: bool, synced_at: datetime | None) -> dict[str, object]:
    return {
        "record_id": record_id,
        "account": "acc-1",
        "status": "synced" if synced_at is not None else "pending",
        "assignment_created": assignment,
        "completion_created": False,
        "attempts": 0,
        "updated_at": T0,
        "synced_at": synced_at,
    }


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_rows_written_before_get_the_earlier_of_their_last_sync_and_their_records_arrival(
    database: str, request: pytest.FixtureRequest
) -> None:
    """A written row gets the earlier of its ``synced_at`` and its record's ``received_at`` (the first
    event came before any write), a row written but never synced its record's arrival, a row never
    written nothing: the account's earliest (T0 - 30 days) is well before the ``min(synced_at)`` used
    until now (T0 - 2 days), which a record's later syncs had moved on."""
    engine = create_engine(request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url"))
    try:
        await upgrade(engine, "0005")
        async with engine.begin() as conn:
            await conn.execute(
                records.insert(),
                [_record(1, T0 - 30 * DAY), _record(2, T0 - DAY), _record(3, T0 - 5 * DAY), _record(4, T0)],
            )
            await conn.execute(
                sync_state.insert(),
                [
                    _row(1, assignment=True, synced_at=T0 - 2 * DAY),  # written a month ago, synced again since
                    _row(2, assignment=True, synced_at=T0 - 3 * DAY),  # synced before its record's (clock skew)
                    _row(3, assignment=True, synced_at=None),  # written, its completion still failing
                    _row(4, assignment=False, synced_at=None),  # nothing written
                ],
            )

        await upgrade(engine)

        async with engine.connect() as conn:
            first = {r.record_id: r.first_written_at for r in await conn.execute(sa.select(sync_state))}
        assert first == {1: T0 - 30 * DAY, 2: T0 - 3 * DAY, 3: T0 - 5 * DAY, 4: None}
    finally:
        await engine.dispose()
