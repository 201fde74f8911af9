"""The repository: every SQL statement lmsbridge runs. Connections never leave this module.

Database faults surface as :class:`~lmsbridge.errors.InfrastructureFault`, so the consumer
requeues without using up a record's attempts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lmsbridge.domain import AccountSync, AssignmentEvent, PersonProgress, Rank, RecordKey, RecordState
from lmsbridge.domain.records import merge, state_from_event
from lmsbridge.domain.sync import DEAD, PARKED, PENDING, SYNCED, SyncStep
from lmsbridge.errors import InfrastructureFault
from lmsbridge.ports import AccountState, Ingest, SyncView
from lmsbridge.storage.tables import accounts, content, directory, inbox, metadata, records, sync_state

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["DEAD", "PARKED", "PENDING", "SYNCED", "Repository"]


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _guard(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn driver and SQLAlchemy errors into InfrastructureFault (our fault, not the record's)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise InfrastructureFault(f"database: {type(exc).__name__}") from exc
        except OSError as exc:
            raise InfrastructureFault(f"database: {exc.strerror or type(exc).__name__}") from exc

    return wrapper


class Repository:
    """All persistence for lmsbridge, over one async engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    # --- schema -------------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the tables directly (tests and throwaway databases; production uses migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except (SQLAlchemyError, OSError):
            return False

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    # --- helpers ------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    async def _lock_record(self, conn: AsyncConnection, rid: int) -> Any:
        stmt = select(records).where(records.c.id == rid)
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        return (await conn.execute(stmt)).mappings().one()

    # --- intake -------------------------------------------------------------------------

    @_guard
    async def ingest(
        self,
        items: Sequence[tuple[AssignmentEvent, Sequence[PersonProgress]]],
        accounts_of: dict[str, list[str]],
    ) -> list[Ingest]:
        """Store a batch of events in ONE transaction: inbox, merged records, pending sync rows.

        An event whose message id is already in the inbox changes nothing and returns the
        record ids stored the first time, so its sync can be resumed.
        """
        now = datetime.now(UTC)
        out: list[Ingest] = []
        async with self.engine.begin() as conn:
            for event, people in items:
                first = await conn.execute(
                    self._insert(inbox)
                    .values(
                        message_id=event.message_id,
                        source=event.source,
                        event_type=event.type,
                        received_at=event.received_at,
                        processed_at=now,
                        record_ids=[],
                    )
                    .on_conflict_do_nothing(index_elements=["message_id"])
                )
                if first.rowcount == 0:
                    stored = await conn.scalar(select(inbox.c.record_ids).where(inbox.c.message_id == event.message_id))
                    out.append(Ingest(True, tuple(stored or ())))
                    continue
                ids = [
                    await self._upsert_record(conn, event, person, accounts_of.get(event.source, []), now)
                    for person in people
                ]
                await conn.execute(update(inbox).where(inbox.c.message_id == event.message_id).values(record_ids=ids))
                out.append(Ingest(False, tuple(ids)))
        return out

    async def _upsert_record(
        self,
        conn: AsyncConnection,
        event: AssignmentEvent,
        person: PersonProgress,
        accts: list[str],
        now: datetime,
    ) -> int:
        incoming = state_from_event(event, person)
        await conn.execute(
            self._insert(records)
            .values(
                source=event.source,
                assignment_id=event.assignment_id,
                person_key=person.person_key,
                platform=event.platform,
                learning_object_ref=incoming.learning_object_ref,
                title=incoming.title,
                rank=0,
                version=0,
                received_at=event.received_at,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["source", "learning_object_ref", "person_key"])
        )
        rid = await conn.scalar(
            select(records.c.id).where(
                records.c.source == event.source,
                records.c.learning_object_ref == incoming.learning_object_ref,
                records.c.person_key == person.person_key,
            )
        )
        assert rid is not None
        row = await self._lock_record(conn, rid)
        current = _state(row) if row["rank"] else None
        merged = merge(current, incoming)
        if merged != current:
            await conn.execute(
                update(records)
                .where(records.c.id == rid)
                .values(
                    rank=int(merged.rank),
                    learning_object_ref=merged.learning_object_ref,
                    title=merged.title,
                    assigned_at=merged.assigned_at,
                    due_date=merged.due_date,
                    progress=merged.progress,
                    completed_at=merged.completed_at,
                    passed=merged.passed,
                    score=merged.score,
                    version=row["version"] + 1,
                    updated_at=now,
                )
            )
        for account in accts:
            await conn.execute(
                self._insert(sync_state)
                .values(
                    record_id=rid,
                    account=account,
                    status=PENDING,
                    assignment_created=False,
                    completion_created=False,
                    attempts=0,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["record_id", "account"])
            )
            if merged != current and merged.rank is Rank.COMPLETED:
                # a synced record that just completed has a completion to write
                await conn.execute(
                    update(sync_state)
                    .where(
                        sync_state.c.record_id == rid,
                        sync_state.c.account == account,
                        sync_state.c.status == SYNCED,
                        sync_state.c.completion_created.is_(False),
                    )
                    .values(status=PENDING, attempts=0, updated_at=now)
                )
        return int(rid)

    # --- sync ---------------------------------------------------------------------------

    @_guard
    async def load_sync(self, record_id: int, account: str) -> SyncView | None:
        """The record and its sync state on ``account``; None when either is gone."""
        async with self.engine.connect() as conn:
            return await self._view(conn, record_id, account)

    async def _view(self, conn: AsyncConnection, record_id: int, account: str) -> SyncView | None:
        row = (
            (
                await conn.execute(
                    select(records, sync_state)
                    .join(sync_state, sync_state.c.record_id == records.c.id)
                    .where(records.c.id == record_id, sync_state.c.account == account)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        known = await conn.scalar(
            select(func.count())
            .select_from(content)
            .where(content.c.account == account, content.c.external_reference == row["learning_object_ref"])
        )
        return SyncView(
            record_id=record_id,
            account=account,
            key=RecordKey(row["source"], row["learning_object_ref"], row["person_key"]),
            state=_state(row),
            synced=AccountSync(
                content_known=bool(known),
                assignment_created=row["assignment_created"],
                completion_created=row["completion_created"],
            ),
            status=row["status"],
            attempts=row["attempts"],
            uncertain_step=row["uncertain_step"],
        )

    @_guard
    async def claim(self, record_id: int, account: str, owner: str, now: float, lease: float) -> SyncView | None:
        """Take the record's sync lease on ``account`` and read it afresh, in one transaction.

        None while someone else holds the lease (or the row is gone).
        """
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(sync_state)
                .where(
                    sync_state.c.record_id == record_id,
                    sync_state.c.account == account,
                    or_(
                        sync_state.c.lease_until.is_(None),
                        sync_state.c.lease_until < now,
                        sync_state.c.lease_owner == owner,
                    ),
                )
                .values(lease_owner=owner, lease_until=now + lease)
            )
            if not result.rowcount:
                return None
            return await self._view(conn, record_id, account)

    @_guard
    async def release(self, record_id: int, account: str, owner: str) -> None:
        """Give the lease back (only if we still hold it)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(sync_state)
                .where(
                    sync_state.c.record_id == record_id,
                    sync_state.c.account == account,
                    sync_state.c.lease_owner == owner,
                )
                .values(lease_owner=None, lease_until=None)
            )

    @_guard
    async def mark_written(
        self, record_id: int, account: str, step: SyncStep, lms_id: str | None, *, last: bool = False
    ) -> None:
        """Record that ``step`` is written on the LMS (clears any uncertainty about it).

        ``last``: it was the last write the record needed: mark it synced and give the lease
        back in the same transaction.
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {"uncertain_step": None, "updated_at": now}
        if last:
            values.update(status=SYNCED, reason=None, synced_at=now, lease_owner=None, lease_until=None)
        if step is SyncStep.CREATE_ASSIGNMENT:
            values.update(assignment_created=True, lms_assignment_id=lms_id)
        elif step is SyncStep.CREATE_COMPLETION:
            values.update(completion_created=True, lms_completion_id=lms_id)
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
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(sync_state)
                .where(
                    sync_state.c.record_id == record_id,
                    sync_state.c.account == account,
                    sync_state.c.lease_owner == owner,
                )
                .values(uncertain_step=step.value if step else None, lease_until=now + lease)
            )
        return bool(result.rowcount)

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
            values["last_error"] = error[:2000]
        if status == SYNCED:
            values["synced_at"] = now
        await self._update_sync(record_id, account, values)

    @_guard
    async def note_failure(self, record_id: int, account: str, error: str) -> int:
        """Count a failed attempt (a fault outside lmsbridge); returns the attempts so far."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(sync_state)
                .where(sync_state.c.record_id == record_id, sync_state.c.account == account)
                .values(attempts=sync_state.c.attempts + 1, last_error=error[:2000], updated_at=datetime.now(UTC))
            )
            attempts = await conn.scalar(
                select(sync_state.c.attempts).where(
                    sync_state.c.record_id == record_id, sync_state.c.account == account
                )
            )
        return int(attempts or 0)

    async def _update_sync(self, record_id: int, account: str, values: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(sync_state)
                .where(sync_state.c.record_id == record_id, sync_state.c.account == account)
                .values(**values)
            )

    @_guard
    async def parked(self, account: str, reason: str) -> list[int]:
        """Record ids parked on ``account`` for ``reason``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(sync_state.c.record_id).where(
                    sync_state.c.account == account,
                    sync_state.c.status == PARKED,
                    sync_state.c.reason == reason,
                )
            )
            return [int(r[0]) for r in rows]

    @_guard
    async def unsynced(self, account: str | None = None) -> list[tuple[int, str]]:
        """(record id, account) pairs still pending or parked: what a resync would republish."""
        stmt = select(sync_state.c.record_id, sync_state.c.account).where(sync_state.c.status.in_((PENDING, PARKED)))
        if account is not None:
            stmt = stmt.where(sync_state.c.account == account)
        async with self.engine.connect() as conn:
            return [(int(r[0]), str(r[1])) for r in await conn.execute(stmt)]

    # --- learning objects ---------------------------------------------------------------

    @_guard
    async def missing_content(self, account: str, refs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Of (reference, title) pairs, those not yet upserted on ``account``."""
        wanted = dict(refs)
        if not wanted:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(content.c.external_reference).where(
                    content.c.account == account, content.c.external_reference.in_(list(wanted))
                )
            )
            known = {r[0] for r in rows}
        return [(ref, title) for ref, title in wanted.items() if ref not in known]

    @_guard
    async def mark_content(self, account: str, items: Sequence[tuple[str, str]]) -> None:
        """Remember that these learning objects exist on ``account``."""
        if not items:
            return
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for ref, title in items:
                await conn.execute(
                    self._insert(content)
                    .values(account=account, external_reference=ref, title=title, synced_at=now)
                    .on_conflict_do_nothing(index_elements=["account", "external_reference"])
                )

    # --- people -------------------------------------------------------------------------

    @_guard
    async def user_id(self, account: str, email: str) -> str | None:
        """The StackOne user id for ``email`` on ``account``, from the local directory."""
        async with self.engine.connect() as conn:
            found = await conn.scalar(
                select(directory.c.user_id).where(directory.c.account == account, directory.c.email == email.lower())
            )
        return str(found) if found is not None else None

    @_guard
    async def save_users(self, account: str, users: Iterable[tuple[str, str]]) -> int:
        """Store (email, user id) pairs in the account's directory; returns how many."""
        now = datetime.now(UTC)
        count = 0
        async with self.engine.begin() as conn:
            for email, uid in users:
                stmt = self._insert(directory).values(account=account, email=email.lower(), user_id=uid, updated_at=now)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account", "email"], set_={"user_id": uid, "updated_at": now}
                    )
                )
                count += 1
        return count

    # --- accounts -----------------------------------------------------------------------

    @_guard
    async def account(self, account: str) -> AccountState:
        """Bookkeeping for ``account`` (defaults when never seen)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.account == account))).mappings().first()
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
        async with self.engine.begin() as conn:
            stmt = self._insert(accounts).values(**{"account": account, "paused": False, **values})
            set_ = {k: stmt.excluded[k] for k in values}
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["account"], set_=set_)
                if set_
                else stmt.on_conflict_do_nothing(index_elements=["account"])
            )

    # --- housekeeping and status --------------------------------------------------------

    @_guard
    async def prune_inbox(self, before: datetime) -> int:
        """Forget message ids processed before ``before``; returns how many were removed."""
        async with self.engine.begin() as conn:
            result = await conn.execute(inbox.delete().where(inbox.c.processed_at < before))
            return int(result.rowcount or 0)

    @_guard
    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Sync rows per account and status: ``{account: {status: n}}``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(sync_state.c.account, sync_state.c.status, func.count()).group_by(
                    sync_state.c.account, sync_state.c.status
                )
            )
            out: dict[str, dict[str, int]] = {}
            for account, status, n in rows:
                out.setdefault(str(account), {})[str(status)] = int(n)
            return out

    @_guard
    async def top_reasons(self, status: str, limit: int = 5) -> list[tuple[str, int]]:
        """The most common reasons among rows in ``status`` (parked, dead)."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(sync_state.c.reason, func.count())
                .where(sync_state.c.status == status)
                .group_by(sync_state.c.reason)
                .order_by(func.count().desc())
                .limit(limit)
            )
            return [(str(r[0]), int(r[1])) for r in rows]

    @_guard
    async def inbox_count(self) -> int:
        """How many message ids the inbox remembers."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(inbox)) or 0)


def _state(row: Any) -> RecordState:
    return RecordState(
        rank=Rank(row["rank"]),
        learning_object_ref=row["learning_object_ref"],
        title=row["title"],
        email=row["person_key"],
        assigned_at=_utc(row["assigned_at"]),
        due_date=_utc(row["due_date"]),
        progress=row["progress"],
        completed_at=_utc(row["completed_at"]),
        passed=row["passed"],
        score=row["score"],
    )
