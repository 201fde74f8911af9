"""Revision 0008 merges each record 0005 kept apart under its old key into its twin (one person,
one record) and re-keys the records and directory entries whose key ``email_key`` changed since
0005; 0005 no longer stops an upgrade on a key whose folded form outgrows its column."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from lmsbridge.domain.events import email_key
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import accounts, content, directory, inbox, metadata, records, sync_state
from tests.pipeline.conftest import ACCOUNT
from tests.storage.conftest import event

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
REF = "exec:scenario:discovery-call"
NFD = "jose\u0301@acme.example"  # what 0004 keyed "José" sent decomposed by
NFC = "jos\u00e9@acme.example"  # as the LMS lists him, and as email_key keys both
FULL = "jos\u00e9@\uff41cme.example"  # his domain's "a" full-width: a third key 0004 kept apart
BOB_IDNA = "bob@xn--strae-oqa.de"  # straße.de encoded: IDNA 2003 refused it, so 0005 kept it as sent
BOB = "bob@stra\u00dfe.de"  # its key since email_key decodes IDNA 2008 labels
OTHER = "acc-other"
# Every sync_state column 0004 has that a row may leave empty (one multi-row insert: same keys).
NO_WRITE: dict[str, Any] = dict.fromkeys(
    [
        "reason",
        "lms_assignment_id",
        "lms_completion_id",
        "completion_passed",
        "completion_score",
        "completion_at",
        "superseded_completion_id",
        "uncertain_step",
        "last_error",
        "lease_owner",
        "lease_until",
        "synced_at",
    ]
)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh SQLite file or PostgreSQL database (set up before the runtime, so dropped after it)."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


def _record(
    record_id: int, key: str, *, passed: bool | None = None, score: float | None = None, at: datetime | None = None
) -> dict[str, Any]:
    """A record of REF for ``key``: completed at ``at`` with ``passed`` and ``score``, else assigned."""
    done = at is not None
    return {
        "id": record_id,
        "source": "acme-sales",
        "assignment_id": f"as-{record_id}",
        "person_key": key,
        "platform": "exec",
        "learning_object_ref": REF,
        "title": "Discovery Call",
        "title_at": T0,
        "rank": 3 if done else 1,
        "assigned_at": T0,
        "due_date": None,
        "progress": 100.0 if done else None,
        "completed_at": at,
        "passed": passed,
        "score": score,
        "version": 3,
        "received_at": T0 + record_id * timedelta(hours=1),
        "updated_at": at or T0,
    }


def _sync(record_id: int, account: str = ACCOUNT, **values: Any) -> dict[str, Any]:
    """A sync row with nothing written, pending, overridden by ``values``."""
    return {
        **NO_WRITE,
        "record_id": record_id,
        "account": account,
        "status": "pending",
        "assignment_created": False,
        "completion_created": False,
        "attempts": 0,
        "updated_at": T0 + 2 * DAY,
        **values,
    }


def _written(
    lms_assignment: str, lms_completion: str | None, passed: bool, score: float, at: datetime
) -> dict[str, Any]:
    """The sync columns of a row that wrote its assignment and (``lms_completion``) a completion."""
    out: dict[str, Any] = {"status": "synced", "assignment_created": True, "lms_assignment_id": lms_assignment}
    out["synced_at"] = at
    if lms_completion is not None:
        out.update(
            completion_created=True,
            lms_completion_id=lms_completion,
            completion_passed=passed,
            completion_score=score,
            completion_at=at,
        )
    return out


def _inbox(message_id: str, ids: list[int]) -> dict[str, Any]:
    return {
        "source": "acme-sales",
        "message_id": message_id,
        "event_type": "assignment.completed",
        "received_at": T0,
        "processed_at": datetime.now(UTC),
        "record_ids": ids,
    }


async def _at(url: str, revision: str, rows: list[dict[str, Any]], syncs: list[dict[str, Any]]) -> AsyncEngine:
    """An engine on a database at ``revision`` holding ``rows``, ``syncs``, REF's content on ACCOUNT
    and one inbox entry per record (``m<id>``)."""
    engine = create_engine(url)
    await upgrade(engine, revision)
    async with engine.begin() as conn:
        await conn.execute(records.insert(), rows)
        for sync in syncs:  # one at a time: rows at 0006 and later may also give first_written_at
            await conn.execute(sync_state.insert().values(sync))
        await conn.execute(
            content.insert().values(account=ACCOUNT, external_reference=REF, title="Discovery Call", synced_at=T0)
        )
        await conn.execute(inbox.insert(), [_inbox(f"m{r['id']}", [r["id"]]) for r in rows])
    return engine


async def split_person_at_0004(url: str, user_id: str) -> None:
    """Jose's two records as 0004 left them: his decomposed-e-mail record (a Fail, 40 %) parked as
    ``user_not_found`` with nothing written, his LMS-form record (a Pass, 90 %) synced with its
    assignment and Pass written; the directory names him; inbox entries point at both records."""
    engine = await _at(
        url,
        "0004",
        [
            _record(1, NFD, passed=False, score=40.0, at=T0 + DAY),
            _record(2, NFC, passed=True, score=90.0, at=T0 + 2 * DAY),
        ],
        [
            _sync(1, status="parked", reason="user_not_found"),
            _sync(2, **_written("asg-before", "cmp-before", True, 90.0, T0 + 2 * DAY)),
        ],
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(directory.insert().values(account=ACCOUNT, email=NFC, user_id=user_id, updated_at=T0))
            await conn.execute(
                accounts.insert().values(
                    account=ACCOUNT, paused=False, directory_refreshed_at=T0, email_filter="honoured"
                )
            )
    finally:
        await engine.dispose()


async def _tables(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but Alembic's, sorted (inbox record_ids as they are)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        for table in metadata.sorted_tables:
            if table.name in names:
                out[table.name] = sorted((tuple(r) for r in await conn.execute(sa.select(table))), key=repr)
    return out


async def _head(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()


def _warnings(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["log_level"] == "warning"]


async def test_migrating_0004_leaves_one_record_per_person_with_the_joined_state_and_inbox_ids_resolving(
    database_url: str,
) -> None:
    """After ``migrate`` from 0004, a person split in two records by the old key is one record under
    ``email_key``, holding the join of both states (the Pass, 90 %, version bumped, the earlier
    arrival), one sync row keeping the written assignment and Pass and still synced, and every
    inbox ``record_ids`` entry naming the record that remains; the merge is logged, not warned."""
    await split_person_at_0004(database_url, "usr-jose")
    engine = create_engine(database_url)
    try:
        with capture_logs() as logs:
            await upgrade(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(records))).mappings().all()
            syncs = (await conn.execute(sa.select(sync_state))).mappings().all()
            inbox_ids = {r.message_id: r.record_ids for r in await conn.execute(sa.select(inbox))}
        assert [(r["id"], r["person_key"], r["passed"], r["score"], r["version"]) for r in rows] == [
            (2, NFC, True, 90.0, 4)
        ]
        assert rows[0]["received_at"] == T0 + timedelta(hours=1)
        assert [
            (s["record_id"], s["status"], s["lms_assignment_id"], s["lms_completion_id"], s["completion_passed"])
            for s in syncs
        ] == [(2, "synced", "asg-before", "cmp-before", True)]
        assert inbox_ids == {"m1": [2], "m2": [2]}
        assert [(e["event"], e["merged_into"]) for e in logs if e["event"] == "migrate.records_merged"] == [
            ("migrate.records_merged", [[1, 2]])
        ]
        assert [(e["event"], e["record_ids"]) for e in _warnings(logs)] == [("migrate.records_kept_apart", [1])]
    finally:
        await engine.dispose()


async def test_two_records_that_both_wrote_keep_one_written_row_and_the_extra_lms_writes_are_named(
    database_url: str,
) -> None:
    """Three records of one person (decomposed, full-width domain, LMS form) kept apart by 0005, the
    first two with an assignment and a completion each written to ACCOUNT: one record remains, its
    row on ACCOUNT says the assignment and the best completion (the Pass) are written, with their
    LMS ids, the earliest first write and nothing left to write (synced, attempts 0, no lease);
    a warning per extra write names both records, the account and both LMS ids (the LMS holds two:
    nothing un-writes them). The other account's row, the old records' only one, moves to the twin
    and goes pending (its assignment is still to write); an inbox entry naming two of them names
    the twin once."""
    old_write = T0 - 3 * DAY
    rows = [
        _record(1, NFD, passed=False, score=40.0, at=T0 + DAY),
        _record(2, FULL, passed=True, score=80.0, at=T0 + 2 * DAY),
        _record(3, NFC),
    ]
    syncs = [
        _sync(1, **_written("asg-1", "cmp-1", False, 40.0, T0 + DAY), first_written_at=old_write),
        _sync(2, **_written("asg-2", "cmp-2", True, 80.0, T0 + 2 * DAY), first_written_at=T0),
        _sync(2, OTHER, status="parked", reason="user_not_found", attempts=3, lease_owner="w", lease_until=1e12),
        _sync(3, status="pending", attempts=2, lease_owner="w", lease_until=1e12),
    ]
    engine = await _at(database_url, "0007", rows, syncs)
    try:
        async with engine.begin() as conn:
            await conn.execute(inbox.insert().values(_inbox("both", [1, 2, 3])))
        with capture_logs() as logs:
            await upgrade(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.select(records))).mappings().all()
            by_account = {s["account"]: s for s in (await conn.execute(sa.select(sync_state))).mappings()}
            inbox_ids = {r.message_id: r.record_ids for r in await conn.execute(sa.select(inbox))}
        assert [(r["id"], r["person_key"], r["rank"], r["passed"], r["score"]) for r in kept] == [
            (3, NFC, 3, True, 80.0)
        ]
        main = by_account[ACCOUNT]
        assert (main["record_id"], main["status"], main["attempts"], main["lease_owner"]) == (3, "synced", 0, None)
        assert (main["assignment_created"], main["lms_assignment_id"]) == (True, "asg-1")
        assert (main["completion_created"], main["lms_completion_id"], main["completion_passed"]) == (
            True,
            "cmp-2",
            True,
        )
        assert (main["completion_score"], main["completion_at"], main["first_written_at"]) == (
            80.0,
            T0 + 2 * DAY,
            old_write,
        )
        other = by_account[OTHER]
        assert (other["record_id"], other["status"], other["reason"], other["lease_owner"]) == (
            3,
            "pending",
            None,
            None,
        )
        assert inbox_ids == {"m1": [3], "m2": [3], "m3": [3], "both": [3]}
        duplicated = [e for e in _warnings(logs) if e["event"] == "migrate.twin_writes_duplicated"]
        assert [(e["record_id"], e["merged_record_id"], e["account"]) for e in duplicated] == [(3, 2, ACCOUNT)]
        assert duplicated[0]["lms_assignment_ids"] == ["asg-1", "asg-2"]
        assert duplicated[0]["lms_completion_ids"] == ["cmp-2", "cmp-1"]
    finally:
        await engine.dispose()


async def test_a_better_completion_of_the_old_record_is_left_to_write(database_url: str) -> None:
    """The old record parked with a Pass at 95 % its twin never had (its twin wrote a Pass at 90 %):
    the merged record holds the 95, and the joined row goes pending, its attempts and reason cleared,
    so the next sync writes the better completion (a retake, as if the event had come to the twin)."""
    rows = [_record(1, NFD, passed=True, score=95.0, at=T0 + 3 * DAY), _record(2, NFC, passed=True, score=90.0, at=T0)]
    syncs = [
        _sync(1, status="parked", reason="user_not_found", attempts=4),
        _sync(2, **_written("asg", "cmp", True, 90.0, T0)),
    ]
    engine = await _at(database_url, "0007", rows, syncs)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.select(records))).mappings().all()
            syncs_after = (await conn.execute(sa.select(sync_state))).mappings().all()
        assert [(r["id"], r["score"], r["completed_at"]) for r in kept] == [(2, 95.0, T0 + 3 * DAY)]
        assert [
            (s["record_id"], s["status"], s["reason"], s["attempts"], s["completion_score"]) for s in syncs_after
        ] == [(2, "pending", None, 0, 90.0)]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("written_at", ["0004", "0007"])
async def test_without_twins_0008_changes_nothing(database_url: str, written_at: str) -> None:
    """A database with no record kept apart (ASCII keys, keys already folded) is, row for row, the
    same after 0008 as at 0007, whether its rows were written at 0004 or at 0007, and 0008 logs nothing."""
    rows = [
        _record(1, "jane@acme.example", passed=True, score=70.0, at=T0),
        _record(2, NFC),
        _record(3, "bob@b\u00fccher.example"),
    ]
    syncs = [_sync(1, **_written("asg", "cmp", True, 70.0, T0)), _sync(2), _sync(3, status="parked", reason="x")]
    engine = await _at(database_url, written_at, rows, syncs)
    try:
        await upgrade(engine, "0007")
        before = await _tables(engine)
        with capture_logs() as logs:
            await upgrade(engine)
        assert await _head(engine) == "0008"
        assert await _tables(engine) == before
        assert [e["event"] for e in logs] == []
    finally:
        await engine.dispose()


async def test_0008_run_again_changes_nothing(database_url: str) -> None:
    """0008 run a second time (the database stamped back to 0007) on a database it merged finds no
    record kept apart: every row stays as the first run left it, and nothing is logged."""
    engine = await _at(
        database_url,
        "0004",
        [_record(1, NFD, passed=False, score=40.0, at=T0), _record(2, NFC, passed=True, score=90.0, at=T0)],
        [_sync(1, status="parked", reason="user_not_found"), _sync(2, **_written("asg", "cmp", True, 90.0, T0))],
    )
    try:
        await upgrade(engine)
        merged = await _tables(engine)
        assert len(merged["records"]) == 1
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0007'"))
        with capture_logs() as logs:
            await upgrade(engine)
        assert await _head(engine) == "0008"
        assert await _tables(engine) == merged
        assert [e["event"] for e in logs] == []
    finally:
        await engine.dispose()


async def test_a_record_whose_folded_key_grows_past_320_characters_does_not_stop_the_upgrade(
    database_url: str,
) -> None:
    """A record (and a directory entry) whose key 0004 accepted (22 characters: an Arabic ligature
    repeated in its domain) but whose ``email_key`` is longer than the 320 characters the columns
    hold (NFKC spells each ligature out in 18) migrates to the newest revision: on PostgreSQL, which
    refused the longer key and so the whole upgrade, both keep their old key, named in warnings; on
    SQLite, which stores any length, they are re-keyed as 0005 always did there."""
    odd = "x@" + "\ufdfa" * 20
    assert len(odd) <= 320 < len(email_key(odd))
    engine = await _at(database_url, "0004", [_record(1, odd)], [_sync(1)])
    try:
        async with engine.begin() as conn:
            await conn.execute(directory.insert().values(account=ACCOUNT, email=odd, user_id="u", updated_at=T0))
        with capture_logs() as logs:
            await upgrade(engine)
        assert await _head(engine) == "0008"
        async with engine.connect() as conn:
            keys = [r.person_key for r in await conn.execute(sa.select(records))]
            emails = [r.email for r in await conn.execute(sa.select(directory))]
        warned = [(e["event"], e.get("table"), e["count"]) for e in _warnings(logs)]
        if database_url.startswith("sqlite"):
            assert (keys, emails, warned) == ([email_key(odd)], [email_key(odd)], [])
        else:
            assert (keys, emails) == ([odd], [odd])
            assert warned == [
                ("migrate.keys_too_long", "records", 1),
                ("migrate.keys_too_long", "directory", 1),
                ("migrate.records_left_apart", None, 1),
                ("migrate.keys_too_long", "directory", 1),  # 0008's own look at the directory
            ]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("spelled", [BOB, BOB_IDNA], ids=["decoded", "encoded"])
async def test_a_record_under_a_key_that_changed_without_a_twin_takes_its_new_key_and_gets_the_next_event(
    database_url: str, spelled: str
) -> None:
    """A record 0005 left under ``bob@xn--strae-oqa.de`` (IDNA 2003 refused the label), with no
    twin, is under ``bob@straße.de`` after 0008, its sync row and inbox entry as they were; the
    person's next event, whichever way his domain is spelled, updates that record: one record, not
    a second one (and a second LMS assignment). Before, 0008 only named it in a warning."""
    engine = await _at(database_url, "0007", [{**_record(1, BOB_IDNA), "source": "acme"}], [_sync(1)])
    try:
        if not database_url.startswith("sqlite"):  # the record was inserted with its id: a new one gets 2
            async with engine.begin() as conn:
                await conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('records', 'id'), 1)"))
        with capture_logs() as logs:
            await upgrade(engine)
        repo = Repository(engine)
        try:
            completed = event("after", "assignment.completed", emails=(spelled,))
            [stored] = await repo.intake.ingest([(completed, completed.people)], {"acme": [ACCOUNT]})
        finally:
            await repo.close()  # disposes the engine's pool; the engine still connects
        async with engine.connect() as conn:
            rows = [(r.id, r.person_key, r.rank) for r in await conn.execute(sa.select(records))]
            syncs = [(s.record_id, s.account) for s in await conn.execute(sa.select(sync_state))]
        assert stored.record_ids == (1,)
        assert rows == [(1, BOB, 3)]
        assert syncs == [(1, ACCOUNT)]
        assert [e["event"] for e in _warnings(logs)] == []
    finally:
        await engine.dispose()


async def _directory_at_0007(url: str, entries: list[tuple[str, str, str]]) -> AsyncEngine:
    """An engine on a database at 0007 whose directory holds (account, e-mail, user id) ``entries``."""
    engine = create_engine(url)
    await upgrade(engine, "0007")
    async with engine.begin() as conn:
        await conn.execute(
            directory.insert(),
            [{"account": a, "email": e, "user_id": u, "updated_at": T0} for a, e, u in entries],
        )
    return engine


async def test_a_directory_entry_under_a_key_that_changed_is_found_by_its_new_key(database_url: str) -> None:
    """Directory entries 0005 left under keys ``email_key`` now changes (an IDNA 2008 label, a
    space an invisible character hid, a decoded ideographic full stop) are under their new keys
    after 0008, so a lookup by the person's e-mail, however spelled, finds their LMS user; an ASCII
    key and one already decoded stay as they were."""
    entries = [
        (ACCOUNT, BOB_IDNA, "u-bob"),
        (ACCOUNT, " jane@acme.example", "u-jane"),  # "\ufeff jane@acme.example" as the LMS listed her
        (ACCOUNT, "kenji@a\u3002b.example", "u-kenji"),
        (ACCOUNT, "omar@acme.example", "u-omar"),
        (ACCOUNT, "hans@b\u00fccher.example", "u-hans"),
    ]
    engine = await _directory_at_0007(database_url, entries)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            emails = {r.email: r.user_id for r in await conn.execute(sa.select(directory))}
        repo = Repository(engine)
        try:
            found = [
                await repo.directory.user_id(ACCOUNT, e)
                for e in (BOB, BOB_IDNA, "\ufeff jane@acme.example", "jane@acme.example", "kenji@a.b.example")
            ]
        finally:
            await repo.close()
        assert emails == {
            BOB: "u-bob",
            "jane@acme.example": "u-jane",
            "kenji@a.b.example": "u-kenji",
            "omar@acme.example": "u-omar",
            "hans@b\u00fccher.example": "u-hans",
        }
        assert found == ["u-bob", "u-bob", "u-jane", "u-jane", "u-kenji"]
    finally:
        await engine.dispose()


async def test_a_directory_entry_whose_new_key_its_account_holds_is_dropped(database_url: str) -> None:
    """An entry whose new key another entry of its account already holds goes (the entry under the
    new key, as a refresh since listed it, wins); the same old key in another account, where the new
    key is free, is re-keyed there."""
    entries = [
        (ACCOUNT, BOB_IDNA, "u-bob-old"),
        (ACCOUNT, BOB, "u-bob"),
        (ACCOUNT, " jane@acme.example", "u-jane-old"),
        (ACCOUNT, "jane@acme.example", "u-jane"),
        (OTHER, BOB_IDNA, "u-bob-other"),
    ]
    engine = await _directory_at_0007(database_url, entries)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = sorted((r.account, r.email, r.user_id) for r in await conn.execute(sa.select(directory)))
        assert rows == sorted(
            [(ACCOUNT, BOB, "u-bob"), (ACCOUNT, "jane@acme.example", "u-jane"), (OTHER, BOB, "u-bob-other")]
        )
    finally:
        await engine.dispose()


async def test_0008_run_again_after_re_keying_changes_nothing(database_url: str) -> None:
    """0008 run a second time (the database stamped back to 0007) after it re-keyed a record and
    directory entries finds nothing left to re-key: every row stays as the first run left it, and
    nothing is logged."""
    engine = await _at(database_url, "0007", [_record(1, BOB_IDNA), _record(2, "jane@acme.example")], [_sync(1)])
    try:
        async with engine.begin() as conn:
            await conn.execute(
                directory.insert(),
                [
                    {"account": ACCOUNT, "email": e, "user_id": u, "updated_at": T0}
                    for e, u in [(BOB_IDNA, "u-bob"), (" jane@acme.example", "u-jane"), ("jane@acme.example", "u-j")]
                ],
            )
        await upgrade(engine)
        once = await _tables(engine)
        assert [r[3] for r in once["records"]] == [BOB, "jane@acme.example"]
        assert [(r[1], r[2]) for r in once["directory"]] == [(BOB, "u-bob"), ("jane@acme.example", "u-j")]
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '0007'"))
        with capture_logs() as logs:
            await upgrade(engine)
        assert await _head(engine) == "0008"
        assert await _tables(engine) == once
        assert [e["event"] for e in logs] == []
    finally:
        await engine.dispose()


async def test_two_records_and_two_entries_whose_old_keys_change_to_one_key_end_as_one(database_url: str) -> None:
    """Two records of one learning object under two old keys with the same new key (a decoded
    ideographic and a full-width full stop), neither new key held: the first is re-keyed and the
    second merged into it, one record remains; likewise two directory entries of one account (a
    space before, a space after) leave one entry under the new key, the first in code point order."""
    engine = await _at(
        database_url,
        "0007",
        [_record(1, "kenji@a\u3002b.example"), _record(2, "kenji@a\uff0eb.example", passed=True, score=90.0, at=T0)],
        [_sync(1), _sync(2)],
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                directory.insert(),
                [
                    {"account": ACCOUNT, "email": e, "user_id": u, "updated_at": T0}
                    for e, u in [("jane@acme.example ", "u-after"), (" jane@acme.example", "u-before")]
                ],
            )
        with capture_logs() as logs:
            await upgrade(engine)
        async with engine.connect() as conn:
            rows = [(r.id, r.person_key, r.score) for r in await conn.execute(sa.select(records))]
            syncs = [s.record_id for s in await conn.execute(sa.select(sync_state))]
            entries = [(r.email, r.user_id) for r in await conn.execute(sa.select(directory))]
        assert rows == [(1, "kenji@a.b.example", 90.0)]
        assert syncs == [1]
        assert entries == [("jane@acme.example", "u-before")]
        assert [e["merged_into"] for e in logs if e["event"] == "migrate.records_merged"] == [[[2, 1]]]
    finally:
        await engine.dispose()
