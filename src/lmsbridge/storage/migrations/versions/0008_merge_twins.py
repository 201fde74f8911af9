"""one record per person: each record 0005 kept apart merged into its twin, keys re-keyed

0005 re-keyed records by ``email_key`` but kept a record under its old key when its new key was
taken: one person split in two records before 0005 (an e-mail once sent decomposed, once as the
LMS lists it). No event reaches the old key again, yet its sync row lived on: a directory refresh
unparked it, ``People.resolve`` folded its key to the LMS user, and it wrote its own assignment
and its own (possibly worse) completion beside the twin's. Here each such record (its key is not
its ``email_key``) is merged into its twin (same source and learning object, key ``email_key``):

- the record: ``domain.records.merge`` of the two states (a join), version bumped;
- each account's sync rows joined: a write recorded by either is written (the LMS ids of what
  was written kept), the better written completion kept (``improves``), the earliest first
  write, no lease; pending if the joined row leaves anything to write, else synced. A row whose
  record's state did not change and which has nothing to join is left as it is;
- inbox ``record_ids`` naming the old record name the twin; then the old record goes.

Nothing un-writes the LMS: where both records wrote an assignment (or a completion) the LMS holds
two. One row says written, and ``migrate.twin_writes_duplicated`` names both records, the account
and the LMS ids, so the operator can remove the extra one in the LMS. Merged records are counted in
``migrate.records_merged``.

``email_key`` changed since 0005 (an ``xn--`` label IDNA 2003 refused is decoded, ``bob@straße.de``
for ``bob@xn--strae-oqa.de``; a decoded "。" folded; white space an invisible character hid
stripped), so keys 0005 wrote may not be their key either (``rekeyed``). A record without a twin
takes its new key, as 0005 did, so the person's next event finds it instead of starting a second
record (and a second LMS assignment); one whose new key is longer than its column (PostgreSQL
enforces 320 characters) keeps its old key, named in ``migrate.records_left_apart``. Directory
entries are re-keyed as in 0005: one whose new key the account's directory already holds is
dropped (the directory is a cache; a refresh lists it again), an over-long one kept and counted in
``migrate.keys_too_long``. Re-keyed records and entries are counted in ``migrate.keys_rekeyed``.

Only keys holding something other than printable ASCII, an ``xn--`` label, or a space at either
end can change, so only those are read. The columns and the conversion between a row and a
``RecordState`` are this revision's own, not the current code's: a later revision's columns are not
there when this one runs. The downgrade does nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from lmsbridge.domain.events import rekeyed
from lmsbridge.domain.records import Completion, Rank, RecordState, improves, merge
from lmsbridge.domain.sync import AccountSync, plan_sync
from lmsbridge.logs import get_logger
from lmsbridge.storage.tables import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = get_logger(__name__)
KEY_LENGTH = 320  # records.person_key and directory.email

PENDING, SYNCED, REOPENED = "pending", "synced", "reopened"
_STATE: tuple[str, ...] = ("rank", "learning_object_ref", "title", "title_at", "assigned_at", "due_date", "progress")
_STATE += ("completed_at", "passed", "score", "cycle_at")
_TIMES = {"title_at", "assigned_at", "due_date", "completed_at", "cycle_at", "received_at", "updated_at"}
_TIMES |= {"completion_at", "synced_at", "first_written_at"}

records = sa.table(
    "records",
    *(sa.column(c, UtcDateTime()) if c in _TIMES else sa.column(c) for c in _STATE),
    sa.column("id"),
    sa.column("source"),
    sa.column("person_key"),
    sa.column("version"),
    sa.column("received_at", UtcDateTime()),
    sa.column("updated_at", UtcDateTime()),
)
_SYNC: tuple[str, ...] = ("record_id", "account", "status", "reason", "assignment_created", "lms_assignment_id")
_SYNC += ("completion_created", "lms_completion_id", "completion_passed", "completion_score", "completion_at")
_SYNC += ("superseded_completion_id", "uncertain_step", "attempts", "last_error", "lease_owner", "lease_until")
_SYNC += ("updated_at", "synced_at", "first_written_at")
sync_state = sa.table("sync_state", *(sa.column(c, UtcDateTime()) if c in _TIMES else sa.column(c) for c in _SYNC))
content = sa.table(
    "content",
    sa.column("account"),
    sa.column("external_reference"),
    sa.column("title"),
    sa.column("title_at", UtcDateTime()),
)
directory = sa.table("directory", sa.column("account"), sa.column("email"))
inbox = sa.table("inbox", sa.column("source"), sa.column("message_id"), sa.column("record_ids", sa.JSON()))

Row = Mapping[Any, Any]  # a RowMapping, or a dict of one


def _may_differ(column: sa.ColumnClause[str]) -> sa.ColumnElement[bool]:
    """Keys holding a character outside printable ASCII, an IDNA label, or a space at either end
    (all, on other databases)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        odd = column.op("~")("[^ -~]")
    elif dialect == "sqlite":
        odd = column.op("GLOB")("*[^ -~]*")
    else:
        return sa.true()
    return sa.or_(odd, column.like("%xn--%"), column.like(" %"), column.like("% "))


def _fits(key: str) -> bool:
    """Whether the database can store ``key`` in a 320-character column (SQLite does not enforce
    lengths; PostgreSQL refuses a longer one, and the whole upgrade with it)."""
    return op.get_bind().dialect.name == "sqlite" or len(key) <= KEY_LENGTH


def upgrade() -> None:
    bind = op.get_bind()
    moved, renamed, left = _records(bind)
    entries, dropped, long_entries = _directory(bind)
    if moved:
        _rewrite_inbox(bind, moved)
        pairs = [[old_id, twin_id] for old_id, twin_id in list(moved.items())[:20]]
        log.info("migrate.records_merged", count=len(moved), merged_into=pairs)
    if renamed or entries or dropped:
        log.info("migrate.keys_rekeyed", records=renamed, directory=entries, directory_dropped=dropped)
    if left:
        log.warning("migrate.records_left_apart", count=len(left), record_ids=left[:20])
    if long_entries:
        log.warning("migrate.keys_too_long", table="directory", count=long_entries)


def _records(bind: sa.Connection) -> tuple[dict[int, int], int, list[int]]:
    """Each record whose key is not its key now merged into its twin, else re-keyed if the key fits:
    the merged (old id -> twin id), how many were re-keyed, the ids left as they are."""
    found = bind.execute(
        sa.select(records.c.id, records.c.source, records.c.learning_object_ref, records.c.person_key)
        .where(_may_differ(records.c.person_key))
        .order_by(records.c.id)
    ).all()
    changes = [(rid, source, ref, key) for rid, source, ref, old in found if (key := rekeyed(old)) is not None]
    identity = sa.tuple_(records.c.source, records.c.learning_object_ref, records.c.person_key)
    holders = {(s, r, k): rid for s, r, k, rid in _held(bind, identity, [c[1:] for c in changes], records.c.id)}
    moved: dict[int, int] = {}  # old record id -> its twin's
    renames: list[dict[str, Any]] = []
    left: list[int] = []
    now = datetime.now(UTC)
    for record_id, source, ref, key in changes:
        twin = holders.get((source, ref, key))
        if twin is not None:
            _merge(bind, record_id, twin, now)
            moved[record_id] = twin
        elif _fits(key):
            renames.append({"b_id": record_id, "b_key": key})
            holders[source, ref, key] = record_id  # two old keys, one new key: the second merges into it
        else:
            left.append(record_id)
    if renames:
        stmt = records.update().where(records.c.id == sa.bindparam("b_id")).values(person_key=sa.bindparam("b_key"))
        bind.execute(stmt, renames)
    return moved, len(renames), left


def _directory(bind: sa.Connection) -> tuple[int, int, int]:
    """Directory entries re-keyed as 0005 does: how many re-keyed, dropped (their new key taken in
    their account: the entry there wins) and kept (their new key too long)."""
    found = bind.execute(sa.select(directory.c.account, directory.c.email).where(_may_differ(directory.c.email)))
    # Sorted here, not by the database's collation: of two old keys with one new key, the first keeps it.
    changes = [(account, old, key) for account, old in sorted(found) if (key := rekeyed(old)) is not None]
    fitting = [change for change in changes if _fits(change[2])]
    identity = sa.tuple_(directory.c.account, directory.c.email)
    held = set(_held(bind, identity, [(a, k) for a, _, k in fitting]))
    drops: list[dict[str, Any]] = []
    renames: list[dict[str, Any]] = []
    for account, old, key in fitting:
        (drops if (account, key) in held else renames).append({"b_account": account, "b_old": old, "b_key": key})
        held.add((account, key))
    mine = sa.and_(directory.c.account == sa.bindparam("b_account"), directory.c.email == sa.bindparam("b_old"))
    if drops:
        bind.execute(directory.delete().where(mine), [{k: d[k] for k in ("b_account", "b_old")} for d in drops])
    if renames:
        bind.execute(directory.update().where(mine).values(email=sa.bindparam("b_key")), renames)
    return len(renames), len(drops), len(changes) - len(fitting)


def _held(
    bind: sa.Connection, identity: sa.Tuple, wanted: Sequence[tuple[str, ...]], *extra: sa.ColumnClause[Any]
) -> list[tuple[Any, ...]]:
    """The ``identity`` (and ``extra``) of the rows whose identity is one of ``wanted``: the new
    keys already held, read 500 at a time through the unique index (a statement a row, as 0005
    reads them, took 0.4 ms a row)."""
    out: list[tuple[Any, ...]] = []
    unique = sorted(set(wanted))
    for start in range(0, len(unique), 500):
        found = bind.execute(sa.select(*identity.clauses, *extra).where(identity.in_(unique[start : start + 500])))
        out.extend(tuple(row) for row in found)
    return out


def _merge(bind: sa.Connection, old_id: int, twin_id: int, now: datetime) -> None:
    """Merge record ``old_id`` into ``twin_id``: the joined state, each account's joined sync row."""
    rows = {r["id"]: r for r in bind.execute(sa.select(records).where(records.c.id.in_([old_id, twin_id]))).mappings()}
    old, twin = rows[old_id], rows[twin_id]
    before = _state(twin)
    merged = merge(before, _state(old))
    syncs: dict[str, dict[int, Row]] = {}
    for r in bind.execute(sa.select(sync_state).where(sync_state.c.record_id.in_([old_id, twin_id]))).mappings():
        syncs.setdefault(r["account"], {})[r["record_id"]] = r
    for account, by_record in sorted(syncs.items()):
        mine, theirs = by_record.get(twin_id), by_record.get(old_id)
        if theirs is None and mine is not None and merged == before:
            continue  # nothing to join, nothing new to write
        joined = _join(mine, theirs, old_id, twin_id, account)
        joined.update(_status(bind, merged, joined, account, now))
        joined.update(record_id=twin_id, lease_owner=None, lease_until=None, updated_at=now)
        if theirs is not None:
            bind.execute(sync_state.delete().where(sync_state.c.record_id == old_id, sync_state.c.account == account))
        if mine is None:
            bind.execute(sync_state.insert().values(joined))
        else:
            where = sa.and_(sync_state.c.record_id == twin_id, sync_state.c.account == account)
            bind.execute(sync_state.update().where(where).values(joined))
    bind.execute(
        records.update()
        .where(records.c.id == twin_id)
        .values(
            {name: int(merged.rank) if name == "rank" else getattr(merged, name) for name in _STATE}
            | {"version": twin["version"] + 1, "received_at": min(twin["received_at"], old["received_at"])}
            | {"updated_at": now}
        )
    )
    bind.execute(records.delete().where(records.c.id == old_id))


def _state(row: Row) -> RecordState:
    """The merged state a ``records`` row holds (as ``storage.shared.record_state`` reads it)."""
    return RecordState(
        rank=Rank(row["rank"]),
        learning_object_ref=row["learning_object_ref"],
        title=row["title"],
        title_at=_utc(row["title_at"]),
        email=row["person_key"],
        assigned_at=_utc(row["assigned_at"]),
        due_date=_utc(row["due_date"]),
        progress=row["progress"],
        completed_at=_utc(row["completed_at"]),
        passed=row["passed"],
        score=row["score"],
        cycle_at=_utc(row["cycle_at"]),
    )


def _join(mine: Row | None, theirs: Row | None, old_id: int, twin_id: int, account: str) -> dict[str, Any]:
    """One account's sync row of the twin (``mine``) and of the old record (``theirs``) as one."""
    if mine is None or theirs is None:
        only = mine if mine is not None else theirs
        assert only is not None
        return dict(only)
    joined = dict(mine)
    extra: dict[str, Any] = {}
    if theirs["assignment_created"]:
        if mine["assignment_created"]:
            extra["lms_assignment_ids"] = [mine["lms_assignment_id"], theirs["lms_assignment_id"]]
            joined["lms_assignment_id"] = mine["lms_assignment_id"] or theirs["lms_assignment_id"]
        else:
            joined.update(assignment_created=True, lms_assignment_id=theirs["lms_assignment_id"])
    mine_done, theirs_done = _written(mine), _written(theirs)
    if theirs_done is not None:
        kept, other = (theirs, mine) if mine_done is None or improves(theirs_done, mine_done) else (mine, theirs)
        if mine_done is not None:
            extra["lms_completion_ids"] = [kept["lms_completion_id"], other["lms_completion_id"]]
        for name in ("completion_created", "lms_completion_id", "completion_passed", "completion_score"):
            joined[name] = kept[name]
        joined["completion_at"] = kept["completion_at"]
    superseded = [r["superseded_completion_id"] for r in (mine, theirs) if r["superseded_completion_id"]]
    joined["superseded_completion_id"] = superseded[0] if superseded else None
    if len(superseded) > 1:
        extra["superseded_completion_ids"] = superseded
    steps = {r["uncertain_step"] for r in (mine, theirs) if r["uncertain_step"]}
    # Two different intents fit in one column only as "list before every create".
    joined["uncertain_step"] = REOPENED if len(steps) > 1 else next(iter(steps), None)
    joined["first_written_at"] = _earliest(mine["first_written_at"], theirs["first_written_at"])
    joined["synced_at"] = _latest(mine["synced_at"], theirs["synced_at"])
    joined["last_error"] = mine["last_error"] or theirs["last_error"]
    if extra:
        log.warning(
            "migrate.twin_writes_duplicated", record_id=twin_id, merged_record_id=old_id, account=account, **extra
        )
    return joined


def _written(row: Row) -> Completion | None:
    """The completion a sync row says was written (a row from before 0002 without one: a Pass)."""
    if not row["completion_created"]:
        return None
    return Completion(row["completion_passed"] is not False, row["completion_score"], _utc(row["completion_at"]))


def _status(bind: sa.Connection, state: RecordState, row: Row, account: str, now: datetime) -> dict[str, Any]:
    """Pending (a fresh start) if the row leaves anything to write for ``state``, else synced."""
    known = bind.execute(
        sa.select(content.c.title, content.c.title_at).where(
            content.c.account == account, content.c.external_reference == state.learning_object_ref
        )
    ).first()
    synced = AccountSync(
        content_known=known is not None,
        assignment_created=bool(row["assignment_created"]),
        completion=_written(row),
        content_title=known[0] if known is not None else None,
        content_title_at=known[1] if known is not None else None,
        lms_completion_id=row["lms_completion_id"],
        superseded_completion_id=row["superseded_completion_id"],
    )
    if plan_sync(state, synced).done:
        return {"status": SYNCED, "reason": None, "attempts": 0, "synced_at": row["synced_at"] or now}
    return {"status": PENDING, "reason": None, "attempts": 0}


def _rewrite_inbox(bind: sa.Connection, moved: Mapping[int, int]) -> None:
    """Inbox entries naming a merged record name its twin (each id once, in order)."""
    changed = []
    for source, message_id, ids in bind.execute(sa.select(inbox.c.source, inbox.c.message_id, inbox.c.record_ids)):
        if not any(i in moved for i in ids):
            continue
        changed.append({"b_source": source, "b_message_id": message_id, "b_ids": _renamed(ids, moved)})
    if changed:
        stmt = (
            inbox.update()
            .where(inbox.c.source == sa.bindparam("b_source"), inbox.c.message_id == sa.bindparam("b_message_id"))
            .values(record_ids=sa.bindparam("b_ids", type_=sa.JSON()))
        )
        bind.execute(stmt, changed)


def _renamed(ids: Sequence[int], moved: Mapping[int, int]) -> list[int]:
    out: list[int] = []
    for i in ids:
        new = moved.get(i, i)
        if new not in out:
            out.append(new)
    return out


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def downgrade() -> None:
    pass
