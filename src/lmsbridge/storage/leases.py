"""Sync leases: who may write a record to an account now, and what is already written there.

One ``sync_state`` row per (record, account). A sync takes the row's lease (:meth:`Leases.claim`,
which also reads the record afresh), notes each create as possibly written BEFORE sending it
(:meth:`Leases.intend`, the write-ahead intent that makes a crash or a timeout safe), records
each step written (:meth:`Leases.mark_written`) and gives the lease back. The consumer's
settler moves rows between pending, synced, parked and dead (:meth:`Leases.set_status`) and
counts failed attempts; the sweeper finds pending rows whose message may be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, Connection, String, and_, bindparam, case, false, func, not_, null, or_, select, update

from lmsbridge.domain import AccountSync, Completion, RecordKey
from lmsbridge.domain.sync import DEAD, PARKED, PENDING, REOPENED, SYNCED, SyncStep
from lmsbridge.ports import SyncView
from lmsbridge.storage.prepared import Prepared
from lmsbridge.storage.shared import Sql, clip_text, guard, record_state, utc
from lmsbridge.storage.tables import UtcDateTime, content, records, sync_state

__all__ = ["Leases"]


class _Statements:
    """The lease statements, built once; values come as parameters at execution."""

    def __init__(self) -> None:
        known = content.c.external_reference.label("content_known")
        content_title = (content.c.title.label("content_title"), content.c.title_at.label("content_title_at"))
        self.view = Prepared(
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
        self.claim = Prepared(update(sync_state).where(*row, sync_state.c.status != DEAD, free).values(lease))
        self.claim_reviving = Prepared(
            update(sync_state)
            .where(*row, free)
            .values(lease | {"status": case((sync_state.c.status == DEAD, PENDING), else_=sync_state.c.status)})
        )
        # The SET clause of these two comes from the parameter names at execution.
        self.sync_row = Prepared(update(sync_state).where(*row))
        self.held_sync_row = Prepared(update(sync_state).where(*row, sync_state.c.lease_owner == bindparam("b_owner")))
        # A reopened row's intent outlives each step's (every create of it lists first): a new
        # intent, a refusal and a step recorded keep it; only the plan's last write clears it.
        reopened = sync_state.c.uncertain_step == REOPENED
        self.intend = Prepared(
            update(sync_state)
            .where(*row, sync_state.c.lease_owner == bindparam("b_owner"))
            .values(
                uncertain_step=case((reopened, REOPENED), else_=bindparam("b_step", type_=String())),
                lease_until=bindparam("b_until"),
            )
        )
        doubt = case((and_(reopened, bindparam("b_more", type_=Boolean())), REOPENED), else_=null())
        self.write_step = Prepared(update(sync_state).where(*row).values(uncertain_step=doubt))
        # A create recorded: the row's first write is kept where it is (the LMS pass reads from a
        # day before an account's earliest; ``synced_at`` moves on with every sync).
        first = func.coalesce(sync_state.c.first_written_at, bindparam("b_first", type_=UtcDateTime()))
        self.write_assignment = Prepared(
            update(sync_state).where(*row).values(first_written_at=first, uncertain_step=doubt)
        )
        # A new completion: the one it replaces (a retake's Fail) is noted for deletion; one of a
        # new cycle replaces nothing (records.new_cycle: its assignment created, and itself done,
        # after the written one was completed; unknown times: a retake).
        written_at = sync_state.c.completion_at
        cycle, done = bindparam("b_cycle", type_=UtcDateTime()), bindparam("b_done", type_=UtcDateTime())
        new_cycle = func.coalesce(and_(cycle > written_at, done > written_at), false())
        replaced = and_(
            sync_state.c.completion_created.is_(True), sync_state.c.lms_completion_id != "", not_(new_cycle)
        )
        self.write_completion = Prepared(
            update(sync_state)
            .where(*row)
            .values(
                superseded_completion_id=case(
                    (replaced, sync_state.c.lms_completion_id), else_=sync_state.c.superseded_completion_id
                ),
                first_written_at=first,
                uncertain_step=doubt,
            )
        )
        # A plan's last write marks the row synced only while the record is still the version the
        # plan was made from: an event merged meanwhile (a completion arriving while the assignment
        # was being written) leaves it pending for the sync that event queued, and for the sweeper.
        unchanged = select(records.c.version).where(records.c.id == bindparam("b_id")).scalar_subquery() == bindparam(
            "b_version"
        )
        self.synced_if_unchanged = Prepared(
            update(sync_state).where(*row, unchanged).values(status=SYNCED, reason=None, synced_at=bindparam("b_now"))
        )


class Leases:
    """The ``sync_state`` rows: leases, intents, steps written, status (a :class:`lmsbridge.ports.LeasePort`)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql
        self._stmt = _Statements()

    @guard
    async def load_sync(self, record_id: int, account: str) -> SyncView | None:
        """The record and its sync state on ``account``; None when either is gone."""
        return await self._sql.read(lambda conn: self._view(conn, record_id, account, leased=False))

    def _view(self, conn: Connection, record_id: int, account: str, *, leased: bool) -> SyncView | None:
        row = self._stmt.view.first(conn, {"b_id": record_id, "b_account": account})
        if row is None:
            return None
        return SyncView(
            record_id=record_id,
            account=account,
            key=RecordKey(row["source"], row["learning_object_ref"], row["person_key"]),
            state=record_state(row),
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
            version=int(row["version"]),
        )

    @guard
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
        stmt = self._stmt.claim_reviving if revive else self._stmt.claim

        def work(conn: Connection) -> SyncView | None:
            leased = bool(stmt.execute(conn, params))
            return self._view(conn, record_id, account, leased=leased)

        return await self._sql.write(work)

    def take(
        self,
        conn: Connection,
        record_id: int,
        account: str,
        owner: str,
        now: float,
        until: float,
        intent_of: Callable[[SyncView], SyncStep | None] | None = None,
    ) -> tuple[SyncView, SyncStep | None] | None:
        """:meth:`claim` (never reviving) in the caller's transaction; None unless the lease is now ours.

        On a row with no intent, the one ``intent_of`` names for the view is noted as :meth:`intend`
        notes it (the view returned is as read before). A row with one keeps it: a create may be
        out there, and the next create lists first.
        """
        params = {"b_id": record_id, "b_account": account, "b_owner": owner, "b_now": now, "b_until": until}
        if not self._stmt.claim.execute(conn, params):
            return None
        view = self._view(conn, record_id, account, leased=True)
        if view is None:  # its record is gone (a row just leased is there): nothing to sync
            return None
        step = intent_of(view) if intent_of is not None and view.uncertain_step is None else None
        if step is not None:
            noted = {"b_id": record_id, "b_account": account, "b_owner": owner, "b_step": step.value, "b_until": until}
            self._stmt.intend.execute(conn, noted)
        return view, step

    @guard
    async def release(
        self,
        record_id: int,
        account: str,
        owner: str,
        *,
        synced: bool = False,
        version: int | None = None,
        clear_intent: bool = False,
    ) -> bool:
        """Give the lease back (only if we still hold it); ``synced`` also marks the row up to date,
        only while the record is still ``version`` (see :meth:`mark_written`). False when ``synced``
        was asked and the row was not marked (a newer version, or not ours).

        ``clear_intent``: the row's intent goes too. For an intent stored with the row
        (:class:`~lmsbridge.ports.Lease`) whose create was never sent: the next sync need not list first.
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if clear_intent:
            values["uncertain_step"] = None
        if synced:
            assert version is not None, "a row is marked synced only at the version its plan was read at"
            values.update(updated_at=now)
        params = {"b_id": record_id, "b_account": account, "b_owner": owner, **values}

        def work(conn: Connection) -> bool:
            released = self._stmt.held_sync_row.execute(conn, params) > 0
            if version is None or not synced:
                return True
            return released and self._mark_synced(conn, record_id, account, version, now)

        return await self._sql.write(work)

    @guard
    async def mark_written(
        self,
        record_id: int,
        account: str,
        step: SyncStep,
        lms_id: str | None,
        *,
        last: bool = False,
        completion: Completion | None = None,
        version: int | None = None,
    ) -> bool:
        """Record that ``step`` is written on the LMS (clears any uncertainty about it, and a
        reconcile pass's reopening with the plan's ``last`` write); False when ``last`` could not
        mark the row synced because the record changed since ``version``.

        ``last``: it was the last write the record needed: give the lease back and mark it synced
        in the same transaction, only if the record is still ``version`` (the version the plan was
        made from): one changed meanwhile (a
        completion merged while its assignment was being written) stays pending, for the sync its
        change queued (and the sweeper, should that message be lost), instead of saying synced
        with a write still missing. A completion notes which one was written (``completion``) and
        keeps the LMS id of the one it replaces as superseded. A delete of superseded completions
        clears that note.
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {"updated_at": now, "b_more": not last}
        if last:
            assert version is not None, "a row is marked synced only at the version its plan was read at"
            values.update(lease_owner=None, lease_until=None)
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
        written = self._stmt.write_step
        if step is SyncStep.CREATE_ASSIGNMENT or step is SyncStep.CREATE_COMPLETION:
            params["b_first"] = now
            if step is SyncStep.CREATE_COMPLETION:
                params["b_cycle"] = completion.cycle_at if completion is not None else None
                params["b_done"] = completion.completed_at if completion is not None else None
            written = self._stmt.write_assignment if step is SyncStep.CREATE_ASSIGNMENT else self._stmt.write_completion

        def work(conn: Connection) -> bool:
            written.execute(conn, params)
            if version is None or not last:
                return True
            return self._mark_synced(conn, record_id, account, version, now)

        return await self._sql.write(work)

    def _mark_synced(self, conn: Connection, record_id: int, account: str, version: int, now: datetime) -> bool:
        params = {"b_id": record_id, "b_account": account, "b_version": version, "b_now": now}
        return self._stmt.synced_if_unchanged.execute(conn, params) > 0

    @guard
    async def intend(
        self, record_id: int, account: str, owner: str, step: SyncStep | None, now: float, lease: float
    ) -> bool:
        """Write-ahead intent: note ``step`` as possibly written, and renew the lease, BEFORE the create.

        Whoever syncs the record next (after a crash, a timeout or a 408) lists the LMS before
        creating again. ``step=None`` clears the intent after a definite refusal. A row's
        :data:`~lmsbridge.domain.sync.REOPENED` stays either way (its other creates list first
        too). False when ``owner`` no longer holds the lease: the caller must not write.
        """
        params = {
            "b_id": record_id,
            "b_account": account,
            "b_owner": owner,
            "b_step": step.value if step else None,
            "b_until": now + lease,
        }
        return await self._sql.write(lambda conn: self._stmt.intend.execute(conn, params)) > 0

    @guard
    async def set_status(
        self,
        record_id: int,
        account: str,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        only_from: Collection[str] | None = None,
    ) -> None:
        """Move the sync row to ``status`` (synced, parked, dead, pending), with its reason.

        ``only_from``: only while the row's status is one of these. What a worker notes after its
        ack must not undo what another worker did meanwhile (it took the task queued again and
        marked the record synced).
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {"status": status, "reason": reason, "updated_at": now}
        if error is not None:
            values["last_error"] = clip_text(error)
        if status == SYNCED:
            values["synced_at"] = now
        if only_from is None:
            await self._update_sync(record_id, account, values)
            return
        stmt = (
            update(sync_state)
            .where(
                sync_state.c.record_id == record_id,
                sync_state.c.account == account,
                sync_state.c.status.in_(list(only_from)),
            )
            .values(values)
        )
        await self._sql.write(lambda conn: conn.execute(stmt))

    @guard
    async def note_failure(self, record_id: int, account: str, error: str) -> int:
        """Count a failed attempt (a fault outside lmsbridge); returns the attempts so far."""
        where = (sync_state.c.record_id == record_id, sync_state.c.account == account)

        def work(conn: Connection) -> int:
            conn.execute(
                update(sync_state)
                .where(*where)
                .values(attempts=sync_state.c.attempts + 1, last_error=clip_text(error), updated_at=datetime.now(UTC))
            )
            return int(conn.execute(select(sync_state.c.attempts).where(*where)).scalar() or 0)

        return await self._sql.write(work)

    async def _update_sync(self, record_id: int, account: str, values: dict[str, Any]) -> int:
        """Set ``values`` on one sync row; rows changed."""
        stmt = self._stmt.sync_row
        params = {"b_id": record_id, "b_account": account, **values}

        def work(conn: Connection) -> int:
            return stmt.execute(conn, params)

        return await self._sql.write(work)

    @guard
    async def parked(self, account: str, reason: str) -> list[int]:
        """Record ids parked on ``account`` for ``reason``."""
        stmt = select(sync_state.c.record_id).where(
            sync_state.c.account == account, sync_state.c.status == PARKED, sync_state.c.reason == reason
        )
        return await self._sql.read(lambda conn: [int(r[0]) for r in conn.execute(stmt)])

    @guard
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
                self._stmt.sync_row.execute(conn, {"b_id": rid, "b_account": account, "updated_at": touched})
            return found

        return await self._sql.write(work)


def _written_completion(row: Any) -> Completion | None:
    """The completion a sync row says was written (a row from before 0002 without one: a Pass)."""
    if not row["completion_created"]:
        return None
    passed = row["completion_passed"]
    return Completion(passed is not False, row["completion_score"], utc(row["completion_at"]))
