"""The repository: every SQL statement lmsbridge runs. Connections never leave this module.

Statements are built once (:class:`_Statements`) and run as plain functions of a connection
(:mod:`lmsbridge.storage.database`): on SQLite a whole batch on one thread, on PostgreSQL
through asyncpg. Writes go through :class:`~lmsbridge.storage.group_commit.GroupCommit`: the
writes of concurrent consumers share one transaction, and each returns only after that commit.
Database faults surface as :class:`~lmsbridge.errors.InfrastructureFault`, so the consumer
requeues without using up a record's attempts; a statement refused for its own data (a
title with a NUL on PostgreSQL, a reference longer than its column, a date past year 9999)
as a :class:`~lmsbridge.errors.DeadLetter` with reason ``unstorable``: retrying it could never
succeed, so it fails that event (or sync) alone and for good, with the database's reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, and_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.domain import AccountSync, AssignmentEvent, Completion, PersonProgress, Rank, RecordKey, RecordState
from lmsbridge.domain.records import merge, state_from_event, title_key
from lmsbridge.domain.sync import DEAD, PARKED, PENDING, SYNCED, SyncStep
from lmsbridge.errors import DeadLetter, InfrastructureFault
from lmsbridge.ports import AccountState, ContentItem, Ingest, SyncView
from lmsbridge.storage.database import is_data_error, open_database
from lmsbridge.storage.group_commit import GroupCommit
from lmsbridge.storage.tables import accounts, content, directory, inbox, metadata, records, sync_state

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["DEAD", "PARKED", "PENDING", "SYNCED", "UNSTORABLE", "Repository"]

UNSTORABLE = "unstorable"
"""Dead-letter reason: the database refused the message's own data (retrying cannot help)."""

_RECORD_STATE: tuple[str, ...] = ("rank", "learning_object_ref", "title", "title_at", "assigned_at", "due_date")
_RECORD_STATE += ("progress",)
_RECORD_STATE += ("completed_at", "passed", "score")


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _guard(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn driver and SQLAlchemy errors into InfrastructureFault (our fault, not the record's),
    or into a dead letter (``unstorable``) when the database refused the statement's own data."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            if is_data_error(exc):
                raise DeadLetter(UNSTORABLE, f"the database refused the data: {_complaint(exc)}") from exc
            raise InfrastructureFault(f"database: {type(exc).__name__}") from exc
        except OSError as exc:
            raise InfrastructureFault(f"database: {exc.strerror or type(exc).__name__}") from exc

    return wrapper


def _text(message: str) -> str:
    """Free text from outside (an error message) as a column can hold it: no NUL, 2,000 characters."""
    return message.replace("\x00", "\ufffd")[:2000]


def _complaint(exc: SQLAlchemyError) -> str:
    """The driver's one-line reason (e.g. ``value too long for type character varying(512)``).

    Never SQLAlchemy's own text, which repeats the statement's parameters, the value itself.
    """
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.replace("\x00", "")[:200]


class _Statements:
    """The hot statements, built once per dialect; values come as parameters at execution."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.insert = insert
        self.inbox_ids = select(inbox.c.record_ids).where(
            inbox.c.source == bindparam("source"), inbox.c.message_id == bindparam("message_id")
        )
        self.add_inbox = insert(inbox).on_conflict_do_nothing(index_elements=["source", "message_id"])
        find = select(records).where(
            records.c.source == bindparam("b_source"),
            records.c.learning_object_ref == bindparam("b_ref"),
            records.c.person_key == bindparam("b_person"),
        )
        self.find_record = find.with_for_update() if dialect == "postgresql" else find
        self.add_record = (
            insert(records)
            .on_conflict_do_nothing(index_elements=["source", "learning_object_ref", "person_key"])
            .returning(records.c.id)
        )
        self.set_record = (
            update(records)
            .where(records.c.id == bindparam("b_id"))
            .values(
                {name: bindparam(f"b_{name}") for name in _RECORD_STATE}
                | {"version": bindparam("b_version"), "updated_at": bindparam("b_updated_at")}
            )
        )
        self.add_sync_rows = insert(sync_state).on_conflict_do_nothing(index_elements=["record_id", "account"])
        # A synced record whose state changed may have something to write again (a completion,
        # a retake, a newer title): pending until its sync's plan says otherwise.
        self.reopen = (
            update(sync_state)
            .where(
                sync_state.c.record_id == bindparam("b_id"),
                sync_state.c.account.in_(bindparam("b_accounts", expanding=True)),
                sync_state.c.status == SYNCED,
            )
            .values(status=PENDING, attempts=0, updated_at=bindparam("b_now"))
        )
        known = content.c.external_reference.label("content_known")
        content_title = (content.c.title.label("content_title"), content.c.title_at.label("content_title_at"))
        self.view = (
            select(records, sync_state, known, *content_title)
            .join(sync_state, sync_state.c.record_id == records.c.id)
            .outerjoin(
                content,
                and_(
                    content.c.account == sync_state.c.account,
                    content.c.external_reference == records.c.learning_object_ref,
                ),
            )
            .where(records.c.id == bindparam("b_id"), sync_state.c.account == bindparam("b_account"))
        )
        row = (sync_state.c.record_id == bindparam("b_id"), sync_state.c.account == bindparam("b_account"))
        free = or_(
            sync_state.c.lease_until.is_(None),
            sync_state.c.lease_until < bindparam("b_now"),
            sync_state.c.lease_owner == bindparam("b_owner"),
        )
        lease: dict[str, Any] = {"lease_owner": bindparam("b_owner"), "lease_until": bindparam("b_until")}
        self.claim = update(sync_state).where(*row, sync_state.c.status != DEAD, free).values(lease)
        self.claim_reviving = (
            update(sync_state)
            .where(*row, free)
            .values(lease | {"status": case((sync_state.c.status == DEAD, PENDING), else_=sync_state.c.status)})
        )
        # The SET clause of these two comes from the parameter names at execution.
        self.sync_row = update(sync_state).where(*row)
        self.held_sync_row = update(sync_state).where(*row, sync_state.c.lease_owner == bindparam("b_owner"))
        # A new completion: the one it replaces (a retake's Fail) is noted for deletion.
        replaced = and_(sync_state.c.completion_created.is_(True), sync_state.c.lms_completion_id != "")
        self.write_completion = (
            update(sync_state)
            .where(*row)
            .values(
                superseded_completion_id=case(
                    (replaced, sync_state.c.lms_completion_id), else_=sync_state.c.superseded_completion_id
                )
            )
        )


class Repository:
    """All persistence for lmsbridge, over one async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._sql = _Statements(self._dialect)
        self._db = open_database(engine)
        self._group = GroupCommit(self._db)

    @property
    def transactions(self) -> int:
        """Write transactions committed by this repository's group commit."""
        return self._group.batches

    # --- schema -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the tables directly (tests and throwaway databases; production uses migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            await self._db.read(lambda conn: conn.execute(select(1)).scalar())
            return True
        except (SQLAlchemyError, OSError):
            return False

    async def close(self) -> None:
        """Stop the group-commit writer and release every connection."""
        await self._group.close()
        await self._db.close()
        await self.engine.dispose()

    # --- intake -------------------------------------------------------------------------

    @_guard
    async def ingest(
        self,
        items: Sequence[tuple[AssignmentEvent, Sequence[PersonProgress]]],
        accounts_of: dict[str, list[str]],
    ) -> list[Ingest]:
        """Store events in ONE transaction: merged records, pending sync rows, the inbox.

        An event whose message id is already in the inbox changes nothing and returns the
        record ids stored the first time, so its sync can be resumed. (A duplicate racing its
        twin from another process is merged again, which changes nothing: merge is a join.)
        """

        def work(conn: Connection) -> list[Ingest]:
            now = datetime.now(UTC)
            out: list[Ingest] = []
            for event, people in items:
                stored = conn.execute(
                    self._sql.inbox_ids, {"source": event.source, "message_id": event.message_id}
                ).scalar()
                if stored is not None:
                    out.append(Ingest(True, tuple(stored)))
                    continue
                accts = accounts_of.get(event.source, [])
                ids = [self._upsert_record(conn, event, person, accts, now) for person in people]
                first = conn.execute(
                    self._sql.add_inbox,
                    {
                        "message_id": event.message_id,
                        "source": event.source,
                        "event_type": event.type,
                        "received_at": event.received_at,
                        "processed_at": now,
                        "record_ids": ids,
                    },
                )
                out.append(Ingest(first.rowcount == 0, tuple(ids)))
            return out

        return await self._group.run(work)

    def _upsert_record(
        self, conn: Connection, event: AssignmentEvent, person: PersonProgress, accts: list[str], now: datetime
    ) -> int:
        incoming = state_from_event(event, person)
        identity = {"b_source": event.source, "b_ref": incoming.learning_object_ref, "b_person": person.person_key}
        row = conn.execute(self._sql.find_record, identity).mappings().first()
        rid: int | None = None
        merged = merge(None, incoming)
        changed = True
        if row is None:
            rid = conn.execute(
                self._sql.add_record,
                {
                    "source": event.source,
                    "assignment_id": event.assignment_id,
                    "person_key": person.person_key,
                    "platform": event.platform,
                    "version": 1,
                    "received_at": event.received_at,
                    "updated_at": now,
                    **_columns(merged),
                },
            ).scalar()
            if rid is None:  # another process inserted it meanwhile
                row = conn.execute(self._sql.find_record, identity).mappings().first()
        if row is not None:
            rid = int(row["id"])
            current = _state(row)
            merged = merge(current, incoming)
            changed = merged != current
            if changed:
                values = {f"b_{k}": v for k, v in _columns(merged).items()}
                conn.execute(
                    self._sql.set_record, {"b_id": rid, "b_version": row["version"] + 1, "b_updated_at": now, **values}
                )
        assert rid is not None
        if accts:
            conn.execute(
                self._sql.add_sync_rows,
                [
                    {
                        "record_id": rid,
                        "account": account,
                        "status": PENDING,
                        "assignment_created": False,
                        "completion_created": False,
                        "attempts": 0,
                        "updated_at": now,
                    }
                    for account in accts
                ],
            )
            if changed and row is not None:
                conn.execute(self._sql.reopen, {"b_id": rid, "b_accounts": accts, "b_now": now})
        return rid

    # --- sync ---------------------------------------------------------------------------

    @_guard
    async def load_sync(self, record_id: int, account: str) -> SyncView | None:
        """The record and its sync state on ``account``; None when either is gone."""
        return await self._db.read(lambda conn: self._view(conn, record_id, account, leased=False))

    def _view(self, conn: Connection, record_id: int, account: str, *, leased: bool) -> SyncView | None:
        row = conn.execute(self._sql.view, {"b_id": record_id, "b_account": account}).mappings().first()
        if row is None:
            return None
        return SyncView(
            record_id=record_id,
            account=account,
            key=RecordKey(row["source"], row["learning_object_ref"], row["person_key"]),
            state=_state(row),
            synced=AccountSync(
                content_known=row["content_known"] is not None,
                assignment_created=row["assignment_created"],
                completion=_written_completion(row),
                content_title=row["content_title"],
                content_title_at=row["content_title_at"],
                lms_completion_id=row["lms_completion_id"],
                superseded_completion_id=row["superseded_completion_id"],
            ),
            status=row["status"],
            attempts=row["attempts"],
            uncertain_step=row["uncertain_step"],
            leased=leased,
        )

    @_guard
    async def claim(
        self, record_id: int, account: str, owner: str, now: float, lease: float, *, revive: bool = False
    ) -> SyncView | None:
        """Take the record's sync lease on ``account`` and read it afresh, in one transaction.

        A dead row is leased only when ``revive`` (an operator replayed its dead letter: it
        becomes pending again). A synced row is leased too: its status may be older than the
        record (a completion merged while another consumer wrote the assignment), so only the
        plan decides. The view's ``leased`` says whether the lease is ours; None when the row is gone.
        """
        params = {"b_id": record_id, "b_account": account, "b_owner": owner, "b_now": now, "b_until": now + lease}
        stmt = self._sql.claim_reviving if revive else self._sql.claim

        def work(conn: Connection) -> SyncView | None:
            leased = bool(conn.execute(stmt, params).rowcount)
            return self._view(conn, record_id, account, leased=leased)

        return await self._group.run(work)

    @_guard
    async def release(self, record_id: int, account: str, owner: str, *, synced: bool = False) -> None:
        """Give the lease back (only if we still hold it); ``synced`` also marks the row up to date."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if synced:
            values.update(status=SYNCED, reason=None, synced_at=now, updated_at=now)
        await self._update_sync(record_id, account, values, owner=owner)

    @_guard
    async def mark_written(
        self,
        record_id: int,
        account: str,
        step: SyncStep,
        lms_id: str | None,
        *,
        last: bool = False,
        completion: Completion | None = None,
    ) -> None:
        """Record that ``step`` is written on the LMS (clears any uncertainty about it).

        ``last``: it was the last write the record needed: mark it synced and give the lease
        back in the same transaction. A completion notes which one was written (``completion``)
        and keeps the LMS id of the one it replaces as superseded. A delete of superseded
        completions clears that note.
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {"uncertain_step": None, "updated_at": now}
        if last:
            values.update(status=SYNCED, reason=None, synced_at=now, lease_owner=None, lease_until=None)
        if step is SyncStep.CREATE_ASSIGNMENT:
            values.update(assignment_created=True, lms_assignment_id=lms_id)
        elif step is SyncStep.DELETE_SUPERSEDED:
            values.update(superseded_completion_id=None)
        elif step is SyncStep.CREATE_COMPLETION:
            assert completion is not None, "a written completion says which one it was"
            values.update(
                completion_created=True,
                lms_completion_id=lms_id or "",
                completion_passed=completion.passed,
                completion_score=completion.score,
                completion_at=completion.completed_at,
            )
            params = {"b_id": record_id, "b_account": account, **values}
            await self._group.run(lambda conn: conn.execute(self._sql.write_completion, params))
            return
        await self._update_sync(record_id, account, values)

    @_guard
    async def intend(
        self, record_id: int, account: str, owner: str, step: SyncStep | None, now: float, lease: float
    ) -> bool:
        """Write-ahead intent: note ``step`` as possibly written, and renew the lease, BEFORE the create.

        Whoever syncs the record next (after a crash, a timeout or a 408) lists the LMS before
        creating again. ``step=None`` clears the intent after a definite refusal. False when
        ``owner`` no longer holds the lease: the caller must not write.
        """
        values = {"uncertain_step": step.value if step else None, "lease_until": now + lease}
        return await self._update_sync(record_id, account, values, owner=owner) > 0

    @_guard
    async def set_status(
        self,
        record_id: int,
        account: str,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
    ) -> None:
        """Move the sync row to ``status`` (synced, parked, dead, pending)."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"status": status, "reason": reason, "updated_at": now}
        if error is not None:
            values["last_error"] = _text(error)
        if status == SYNCED:
            values["synced_at"] = now
        await self._update_sync(record_id, account, values)

    @_guard
    async def note_failure(self, record_id: int, account: str, error: str) -> int:
        """Count a failed attempt (a fault outside lmsbridge); returns the attempts so far."""
        where = (sync_state.c.record_id == record_id, sync_state.c.account == account)

        def work(conn: Connection) -> int:
            conn.execute(
                update(sync_state)
                .where(*where)
                .values(attempts=sync_state.c.attempts + 1, last_error=_text(error), updated_at=datetime.now(UTC))
            )
            return int(conn.execute(select(sync_state.c.attempts).where(*where)).scalar() or 0)

        return await self._group.run(work)

    async def _update_sync(self, record_id: int, account: str, values: dict[str, Any], *, owner: str = "") -> int:
        """Set ``values`` on one sync row (only while ``owner`` holds its lease, if given); rows changed."""
        stmt = self._sql.held_sync_row if owner else self._sql.sync_row
        params = {"b_id": record_id, "b_account": account, **values} | ({"b_owner": owner} if owner else {})

        def work(conn: Connection) -> int:
            return int(conn.execute(stmt, params).rowcount or 0)

        return await self._group.run(work)

    @_guard
    async def parked(self, account: str, reason: str) -> list[int]:
        """Record ids parked on ``account`` for ``reason``."""
        stmt = select(sync_state.c.record_id).where(
            sync_state.c.account == account, sync_state.c.status == PARKED, sync_state.c.reason == reason
        )
        return await self._db.read(lambda conn: [int(r[0]) for r in conn.execute(stmt)])

    @_guard
    async def stale_pending(
        self, accounts: Sequence[str], *, unchanged_since: datetime, now: float, limit: int = 500
    ) -> list[tuple[int, str]]:
        """(record id, account) pairs pending on ``accounts``, unchanged since ``unchanged_since`` and
        without a live lease: records whose message may be lost (the sweeper queues them again).

        Their ``updated_at`` is set to now in the same transaction, so the next sweep waits again.
        """
        if not accounts:
            return []
        stmt = (
            select(sync_state.c.record_id, sync_state.c.account)
            .where(
                sync_state.c.status == PENDING,
                sync_state.c.account.in_(list(accounts)),
                sync_state.c.updated_at < unchanged_since,
                or_(sync_state.c.lease_until.is_(None), sync_state.c.lease_until < now),
            )
            .order_by(sync_state.c.updated_at)
            .limit(limit)
        )

        def work(conn: Connection) -> list[tuple[int, str]]:
            found = [(int(r[0]), str(r[1])) for r in conn.execute(stmt)]
            touched = datetime.now(UTC)
            for rid, account in found:
                conn.execute(self._sql.sync_row, {"b_id": rid, "b_account": account, "updated_at": touched})
            return found

        return await self._group.run(work)

    # --- learning objects ---------------------------------------------------------------

    @_guard
    async def missing_content(self, account: str, items: Iterable[ContentItem]) -> list[ContentItem]:
        """Of (reference, title, title time) items, those whose title the LMS of ``account`` lacks.

        An item is missing when its object was never upserted there, or when the title written
        is another, older one (the same text at another time needs no write).
        """
        wanted = {ref: (ref, title, at) for ref, title, at in items}
        if not wanted:
            return []
        stmt = select(content.c.external_reference, content.c.title, content.c.title_at).where(
            content.c.account == account, content.c.external_reference.in_(list(wanted))
        )
        known = await self._db.read(lambda conn: {r[0]: title_key(r[1], r[2]) for r in conn.execute(stmt)})

        def missing(ref: str, title: str, at: datetime | None) -> bool:
            return ref not in known or (title != known[ref][1] and title_key(title, at) > known[ref])

        return [item for ref, item in wanted.items() if missing(*item)]

    @_guard
    async def mark_content(self, account: str, items: Sequence[ContentItem]) -> None:
        """Remember that these learning objects exist on ``account``, each with its newest title (and its time)."""
        if not items:
            return
        now = datetime.now(UTC)
        refs = [ref for ref, _, _ in items]
        current = select(content.c.external_reference, content.c.title, content.c.title_at).where(
            content.c.account == account, content.c.external_reference.in_(refs)
        )

        def work(conn: Connection) -> None:
            known = {r[0]: title_key(r[1], r[2]) for r in conn.execute(current)}
            for ref, title, at in items:
                row = {"title": title, "title_at": at, "synced_at": now}
                if ref not in known:
                    conn.execute(content.insert().values(account=account, external_reference=ref, **row))
                elif title_key(title, at) > known[ref]:
                    where = (content.c.account == account, content.c.external_reference == ref)
                    conn.execute(update(content).where(*where).values(**row))

        await self._group.run(work)

    # --- people -------------------------------------------------------------------------

    @_guard
    async def user_id(self, account: str, email: str) -> str | None:
        """The StackOne user id for ``email`` on ``account``, from the local directory."""
        stmt = select(directory.c.user_id).where(directory.c.account == account, directory.c.email == email.lower())
        found = await self._db.read(lambda conn: conn.execute(stmt).scalar())
        return str(found) if found is not None else None

    @_guard
    async def save_users(self, account: str, users: Iterable[tuple[str, str]]) -> int:
        """Store (email, user id) pairs in the account's directory; returns how many."""
        now = datetime.now(UTC)
        latest = {email.lower(): uid for email, uid in users}  # one row per e-mail: the last one listed
        if not latest:
            return 0
        rows = [
            {"account": account, "email": email, "user_id": uid, "updated_at": now} for email, uid in latest.items()
        ]
        stmt = self._sql.insert(directory)
        upsert = stmt.on_conflict_do_update(
            index_elements=["account", "email"],
            set_={"user_id": stmt.excluded.user_id, "updated_at": stmt.excluded.updated_at},
        )
        await self._group.run(lambda conn: conn.execute(upsert, rows))
        return len(rows)

    @_guard
    async def forget_user(self, account: str, email: str, user_id: str) -> None:
        """Drop ``email``'s directory entry on ``account`` if it still names ``user_id`` (the LMS said 404)."""
        stmt = directory.delete().where(
            directory.c.account == account, directory.c.email == email.lower(), directory.c.user_id == user_id
        )
        await self._group.run(lambda conn: conn.execute(stmt))

    # --- accounts -----------------------------------------------------------------------

    @_guard
    async def account(self, account: str) -> AccountState:
        """Bookkeeping for ``account`` (defaults when never seen)."""
        stmt = select(accounts).where(accounts.c.account == account)
        row = await self._db.read(lambda conn: conn.execute(stmt).mappings().first())
        if row is None:
            return AccountState(account)
        return AccountState(
            account=account,
            paused=row["paused"],
            reason=row["reason"],
            directory_refreshed_at=_utc(row["directory_refreshed_at"]),
            email_filter=row["email_filter"] or "unknown",
        )

    @_guard
    async def update_account(self, account: str, **values: Any) -> None:
        """Upsert bookkeeping fields of ``account`` (paused, reason, status, since, directory_*)."""
        values = {k: _text(v) if k == "reason" and isinstance(v, str) else v for k, v in values.items()}
        stmt = self._sql.insert(accounts).values(**{"account": account, "paused": False, **values})
        set_ = {k: stmt.excluded[k] for k in values}
        upsert = (
            stmt.on_conflict_do_update(index_elements=["account"], set_=set_)
            if set_
            else stmt.on_conflict_do_nothing(index_elements=["account"])
        )
        await self._group.run(lambda conn: conn.execute(upsert))

    # --- housekeeping and status --------------------------------------------------------

    @_guard
    async def prune_inbox(self, before: datetime) -> int:
        """Forget message ids processed before ``before``; returns how many were removed."""
        stmt = inbox.delete().where(inbox.c.processed_at < before)
        return await self._group.run(lambda conn: int(conn.execute(stmt).rowcount or 0))

    @_guard
    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Sync rows per account and status: ``{account: {status: n}}``."""
        stmt = select(sync_state.c.account, sync_state.c.status, func.count()).group_by(
            sync_state.c.account, sync_state.c.status
        )
        out: dict[str, dict[str, int]] = {}
        for account, status, n in await self._db.read(lambda conn: conn.execute(stmt).all()):
            out.setdefault(str(account), {})[str(status)] = int(n)
        return out

    @_guard
    async def top_reasons(self, status: str, limit: int = 5) -> list[tuple[str, int]]:
        """The most common reasons among rows in ``status`` (parked, dead)."""
        stmt = (
            select(sync_state.c.reason, func.count())
            .where(sync_state.c.status == status)
            .group_by(sync_state.c.reason)
            .order_by(func.count().desc())
            .limit(limit)
        )
        return await self._db.read(lambda conn: [(str(r[0]), int(r[1])) for r in conn.execute(stmt)])

    @_guard
    async def inbox_count(self) -> int:
        """How many message ids the inbox remembers."""
        stmt = select(func.count()).select_from(inbox)
        return await self._db.read(lambda conn: int(conn.execute(stmt).scalar() or 0))


def _state(row: Any) -> RecordState:
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
    )


def _written_completion(row: Any) -> Completion | None:
    """The completion a sync row says was written (a row from before 0002 without one: a Pass)."""
    if not row["completion_created"]:
        return None
    passed = row["completion_passed"]
    return Completion(passed is not False, row["completion_score"], _utc(row["completion_at"]))


def _columns(state: RecordState) -> dict[str, Any]:
    """The records columns that hold a merged state."""
    return {name: int(state.rank) if name == "rank" else getattr(state, name) for name in _RECORD_STATE}
