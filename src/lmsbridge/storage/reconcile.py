"""What reconciliation reads and keeps in the database, apart from the repository.

Reads: the local records a platform page is compared with, per-assignment counts (is a
team assignment's aggregate what lmsbridge holds?), and the (record, account) rows marked
written on an LMS account. Writes: a written row found missing in the LMS goes back to
pending; the aggregates seen at the last pass; each pass's figures (for ``status``); and a
lease so one worker at a time runs the periodic pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, and_, case, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.domain import Completion, Rank, RecordState
from lmsbridge.domain.sync import PENDING, REOPENED, SYNCED
from lmsbridge.storage.database import open_database
from lmsbridge.storage.shared import dialect_insert, guard, record_state
from lmsbridge.storage.tables import (
    directory,
    reconcile_lease,
    reconcile_runs,
    reconcile_seen,
    records,
    sync_state,
)

__all__ = ["Hold", "PassRecord", "ReconcileStore"]


_STREAMED = 5_000  # rows fetched at a time from PostgreSQL's cursor


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


Hold = Callable[[int, str, str, bool, bool, Completion | None], None]
"""Takes one sync row of an account: record id, e-mail, learning object, assignment and completion
written, and which completion was (None: none, or a row from before revision 0002 that did not say)."""


@dataclass(frozen=True, slots=True)
class PassRecord:
    """The last pass of one source (or ``lms:<account>``)."""

    source: str
    started_at: float
    duration: float
    outcome: str
    findings: dict[str, Any]
    error: str | None
    last_success_at: float | None


class ReconcileStore:
    """Reconciliation's reads and writes, over its own connection to the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = open_database(engine)
        self._insert = dialect_insert(engine.dialect.name)

    async def close(self) -> None:
        """Release this store's connection (the engine belongs to the caller)."""
        await self._db.close()

    # --- the platform side --------------------------------------------------------------

    @guard
    async def states(self, source: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], RecordState]:
        """The local state of each (learning object, person) of ``source`` that has a record."""
        if not keys:
            return {}
        pair = tuple_(records.c.learning_object_ref, records.c.person_key)
        statements = [
            select(records).where(records.c.source == source, pair.in_(chunk)) for chunk in _chunks(sorted(set(keys)))
        ]

        def work(conn: Connection) -> dict[tuple[str, str], RecordState]:
            rows = [row for stmt in statements for row in conn.execute(stmt).mappings()]
            return {(r["learning_object_ref"], r["person_key"]): record_state(r) for r in rows}

        return await self._db.read(work)

    @guard
    async def held(self, source: str, assignment_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(records, completed records) lmsbridge holds per platform assignment id."""
        if not assignment_ids:
            return {}
        done = func.sum(case((records.c.rank == int(Rank.COMPLETED), 1), else_=0))
        statements = [
            select(records.c.assignment_id, func.count(), done)
            .where(records.c.source == source, records.c.assignment_id.in_(chunk))
            .group_by(records.c.assignment_id)
            for chunk in _chunks(sorted(set(assignment_ids)))
        ]
        return await self._db.read(
            lambda conn: {
                str(r[0]): (int(r[1]), int(r[2] or 0)) for stmt in statements for r in conn.execute(stmt).all()
            }
        )

    @guard
    async def seen(self, source: str) -> dict[str, tuple[int, int]]:
        """The (total, completed) aggregates of each assignment when a pass last read its members."""
        stmt = select(reconcile_seen.c.assignment_id, reconcile_seen.c.total, reconcile_seen.c.completed).where(
            reconcile_seen.c.source == source
        )
        return await self._db.read(lambda conn: {str(r[0]): (int(r[1]), int(r[2])) for r in conn.execute(stmt)})

    @guard
    async def remember_seen(self, source: str, assignment_id: str, total: int, completed: int, now: float) -> None:
        """Note the aggregates of an assignment whose members were just read and queued."""
        stmt = self._insert(reconcile_seen).values(
            source=source, assignment_id=assignment_id, total=total, completed=completed, seen_at=now
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["source", "assignment_id"],
            set_={"total": total, "completed": completed, "seen_at": now},
        )
        await self._db.write([lambda conn: conn.execute(upsert)])

    # --- the LMS side -------------------------------------------------------------------

    @guard
    async def first_written_at(self, account: str) -> datetime | None:
        """When lmsbridge first recorded a write to ``account`` as done (None: never).

        The earliest of the rows' first writes, which later syncs never move (``synced_at`` does:
        read from there, the window crept past the first writes, and they looked missing). A row
        reopened since keeps its first write: the window only ever widens.
        """
        stmt = select(func.min(sync_state.c.first_written_at)).where(sync_state.c.account == account)
        return _utc(await self._db.read(lambda conn: conn.execute(stmt).scalar()))

    @guard
    async def each_sync_row(self, account: str, hold: Hold) -> None:
        """Call ``hold`` with each (record, account) row on ``account``, written or not.

        The rows stream from one query (a server-side cursor on PostgreSQL), each handed over as it
        is read, so an account's millions of rows are never in memory at once. ``hold`` runs where
        the query does (SQLite: the store's thread): it must only record what it is given.
        """
        stmt = (
            select(
                records.c.id,
                records.c.person_key,
                records.c.learning_object_ref,
                sync_state.c.assignment_created,
                sync_state.c.completion_created,
                sync_state.c.completion_passed,
                sync_state.c.completion_score,
                sync_state.c.completion_at,
            )
            .join(sync_state, sync_state.c.record_id == records.c.id)
            .where(sync_state.c.account == account)
            .order_by(records.c.id)
        )

        def work(conn: Connection) -> None:
            for r in conn.execution_options(stream_results=True, yield_per=_STREAMED).execute(stmt):
                written = Completion(bool(r[5]), r[6], _utc(r[7])) if r[4] and r[5] is not None else None
                hold(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), bool(r[4]), written)

        await self._db.read(work)

    @guard
    async def held_pairs(self, account: str, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of ``pairs`` (e-mail, learning object) with a sync row on ``account`` now."""
        if not pairs:
            return set()
        pair = tuple_(records.c.person_key, records.c.learning_object_ref)
        statements = [
            select(records.c.person_key, records.c.learning_object_ref)
            .join(sync_state, sync_state.c.record_id == records.c.id)
            .where(sync_state.c.account == account, pair.in_(chunk))
            for chunk in _chunks(sorted(set(pairs)))
        ]
        return await self._db.read(
            lambda conn: {(str(r[0]), str(r[1])) for stmt in statements for r in conn.execute(stmt)}
        )

    @guard
    async def directory(self, account: str) -> dict[str, str]:
        """The account's known people: e-mail -> StackOne user id."""
        stmt = select(directory.c.email, directory.c.user_id).where(directory.c.account == account)
        return await self._db.read(lambda conn: {str(r[0]): str(r[1]) for r in conn.execute(stmt)})

    @guard
    async def reopen(self, record_id: int, account: str, *, assignment: bool, completion: bool, now: float) -> bool:
        """Mark a write found missing in the LMS as not done, so the next sync writes it again.

        Only a row at rest (synced, no lease held, no intent): one being written right now is left
        to its writer. Its intent becomes :data:`~lmsbridge.domain.sync.REOPENED`: a listing can
        miss a row, so the sync lists the person's assignments or completions before each create,
        and records what it finds instead of writing it twice. True when the row was reopened.
        """
        values: dict[str, Any] = {"status": PENDING, "attempts": 0, "reason": None, "uncertain_step": REOPENED}
        if assignment:
            values.update(assignment_created=False, lms_assignment_id=None)
        if completion:
            values.update(completion_created=False, lms_completion_id=None)
        stmt = (
            update(sync_state)
            .where(
                sync_state.c.record_id == record_id,
                sync_state.c.account == account,
                sync_state.c.status == SYNCED,
                sync_state.c.uncertain_step.is_(None),
                or_(sync_state.c.lease_until.is_(None), sync_state.c.lease_until < now),
            )
            .values(values)
        )
        [changed] = await self._db.write([lambda conn: int(conn.execute(stmt).rowcount or 0)])
        return bool(changed)

    # --- passes and the periodic lease --------------------------------------------------

    @guard
    async def record_pass(
        self,
        source: str,
        *,
        started_at: float,
        duration: float,
        outcome: str,
        findings: dict[str, Any],
        error: str | None,
    ) -> None:
        """Keep the figures of a pass (the last one per source); a finished pass is the last success."""
        values: dict[str, Any] = {
            "started_at": started_at,
            "duration": duration,
            "outcome": outcome,
            "findings": findings,
            "error": error,
        }
        if outcome == "finished":
            values["last_success_at"] = started_at + duration
        stmt = self._insert(reconcile_runs).values(source=source, **values)
        upsert = stmt.on_conflict_do_update(index_elements=["source"], set_=values)
        await self._db.write([lambda conn: conn.execute(upsert)])

    @guard
    async def passes(self) -> list[PassRecord]:
        """The last pass of every source, by name."""
        stmt = select(reconcile_runs).order_by(reconcile_runs.c.source)
        rows = await self._db.read(lambda conn: conn.execute(stmt).mappings().all())
        return [
            PassRecord(
                source=r["source"],
                started_at=r["started_at"],
                duration=r["duration"],
                outcome=r["outcome"],
                findings=dict(r["findings"] or {}),
                error=r["error"],
                last_success_at=r["last_success_at"],
            )
            for r in rows
        ]

    @guard
    async def take_lease(self, name: str, owner: str, now: float, seconds: float) -> bool:
        """Hold ``name`` until ``now + seconds`` if it is free, expired or already ours; True when held."""
        insert = self._insert(reconcile_lease).values(name=name, owner=owner, until=now + seconds)
        take = insert.on_conflict_do_nothing(index_elements=["name"])
        steal = (
            update(reconcile_lease)
            .where(
                reconcile_lease.c.name == name,
                or_(reconcile_lease.c.until < now, reconcile_lease.c.owner == owner),
            )
            .values(owner=owner, until=now + seconds)
        )

        def work(conn: Connection) -> bool:
            if conn.execute(take).rowcount:
                return True
            return bool(conn.execute(steal).rowcount)

        [held] = await self._db.write([work])
        return bool(held)

    @guard
    async def release_lease(self, name: str, owner: str) -> None:
        """Give ``name`` back if ``owner`` holds it."""
        stmt = reconcile_lease.delete().where(and_(reconcile_lease.c.name == name, reconcile_lease.c.owner == owner))
        await self._db.write([lambda conn: conn.execute(stmt)])


T = TypeVar("T")
IN_CHUNK = 5_000
"""Values in one ``IN (...)`` list at most: asyncpg refuses a statement with more than 32,767
arguments (a pair is two), and SQLite builds may stop at 32,766. A platform listing 40,000
assignments, or an organisation-wide assignment's 20,000 people, failed the whole pass."""


def _chunks(values: Sequence[T]) -> list[Sequence[T]]:
    """``values`` in slices of :data:`IN_CHUNK`."""
    return [values[i : i + IN_CHUNK] for i in range(0, len(values), IN_CHUNK)]
