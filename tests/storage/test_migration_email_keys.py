"""Revision 0005 re-keys the records and the directory an earlier version wrote by ``email_key``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import directory, records

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NFD = "jose\u0301@acme.example"  # what 0004's key (lower-cased) kept of "José" sent decomposed
IDNA = "hans@xn--bcher-kva.example"
HANS = "hans@b\u00fccher.example"


def _record(record_id: int, person_key: str, ref: str = "exec:scenario:a") -> dict[str, object]:
    return {
        "id": record_id,
        "source": "acme",
        "assignment_id": f"as-{record_id}",
        "person_key": person_key,
        "platform": "exec",
        "learning_object_ref": ref,
        "title": "A",
        "rank": 1,
        "version": 1,
        "received_at": T0,
        "updated_at": T0,
    }


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_keys_written_before_are_re_keyed_and_a_split_person_is_kept_apart(
    database: str, request: pytest.FixtureRequest
) -> None:
    """A key in decomposed form or with an IDNA domain becomes its ``email_key``, ASCII keys and
    other rows are untouched; a record whose new key another record of its learning object holds
    keeps its old one (the warning counts it), and a directory entry whose new key is taken goes."""
    engine = create_engine(request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url"))
    try:
        await upgrade(engine, "0004")
        rows = [
            _record(1, NFD),
            _record(2, IDNA),
            _record(3, HANS),
            _record(4, IDNA, ref="exec:scenario:b"),
            _record(5, "jane@acme.example"),
        ]
        entries = [(NFD, "u-jose"), (IDNA, "u-hans-old"), (HANS, "u-hans"), ("jane@acme.example", "u-jane")]
        async with engine.begin() as conn:
            await conn.execute(records.insert(), rows)
            await conn.execute(
                directory.insert(),
                [{"account": "acc-1", "email": e, "user_id": u, "updated_at": T0} for e, u in entries],
            )

        with capture_logs() as logs:
            await upgrade(engine, "0005")  # 0008 merges the record kept apart here into its twin

        async with engine.connect() as conn:
            keys = {r.id: r.person_key for r in await conn.execute(sa.select(records.c.id, records.c.person_key))}
            users = {r.email: r.user_id for r in await conn.execute(sa.select(directory))}
        assert keys == {1: "jos\u00e9@acme.example", 2: IDNA, 3: HANS, 4: HANS, 5: "jane@acme.example"}
        assert users == {"jos\u00e9@acme.example": "u-jose", HANS: "u-hans", "jane@acme.example": "u-jane"}
        assert [(e["event"], e["count"], e["record_ids"]) for e in logs if e["log_level"] == "warning"] == [
            ("migrate.records_kept_apart", 1, [2])
        ]
    finally:
        await engine.dispose()
