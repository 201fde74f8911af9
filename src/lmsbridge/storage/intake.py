"""Intake: events stored once, as merged records with a pending sync row per account.

The ``inbox`` remembers every (source, message id) with the records its event touched, so a
redelivered event changes nothing and its syncs can be resumed; ``records`` holds one merged
state per (source, learning object, person) (:func:`lmsbridge.domain.records.merge`, a join);
``sync_state`` gets a pending row per account the source feeds, and a synced row whose record
changed goes back to pending. Old message ids are pruned after the retention period.

Given a :class:`~lmsbridge.ports.Lease`, the sync rows of a record the event creates are
inserted already leased (with the lease's write-ahead intent, if it has one), and their
:class:`~lmsbridge.ports.SyncView` is returned: the consumer syncs them at once, without a claim
(an update and a read) in a transaction of its own. The rows of a record that existed are
claimed in the same transaction where they are free (:meth:`Leases.take`); one another consumer
holds is claimed by its sync, later, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, tuple_, update

from lmsbridge.domain import AccountSync, AssignmentEvent, PersonProgress, RecordKey, RecordState
from lmsbridge.domain.records import merge, state_from_event
from lmsbridge.domain.sync import PENDING, SYNCED, SyncStep
from lmsbridge.ports import Ingest, Lease, SyncView
from lmsbridge.storage.leases import Leases
from lmsbridge.storage.prepared import Prepared
from lmsbridge.storage.shared import Sql, guard, record_state, utc
from lmsbridge.storage.tables import content, inbox, records, sync_state

__all__ = ["Intake"]

PRUNE_BATCH = 5_000
"""Message ids the inbox forgets in one transaction."""
_RECORD_STATE: tuple[str, ...] = ("rank", "learning_object_ref", "title", "title_at", "assigned_at", "due_date")
_RECORD_STATE += ("progress",)
_RECORD_STATE += ("completed_at", "passed", "score", "cycle_at")


class _Statements:
    """Intake's statements, built once per dialect; values come as parameters at execution.

    Each is :class:`~lmsbridge.storage.prepared.Prepared`: on SQLite they run on the driver.
    """

    def __init__(self, sql: Sql) -> None:
        insert = sql.insert
        self.inbox_ids = Prepared(
            select(inbox.c.record_ids).where(
                inbox.c.source == bindparam("source"), inbox.c.message_id == bindparam("message_id")
            )
        )
        self.add_inbox = Prepared(insert(inbox).on_conflict_do_nothing(index_elements=["source", "message_id"]))
        find = select(records).where(
            records.c.source == bindparam("b_source"),
            records.c.learning_object_ref == bindparam("b_ref"),
            records.c.person_key == bindparam("b_person"),
        )
        self.find_record = Prepared(find.with_for_update() if sql.dialect == "postgresql" else find)
        self.add_record = Prepared(
            insert(records)
            .on_conflict_do_nothing(index_elements=["source", "learning_object_ref", "person_key"])
            .returning(records.c.id)
        )
        self.set_record = Prepared(
            update(records)
            .where(records.c.id == bindparam("b_id"))
            .values(
                {name: bindparam(f"b_{name}") for name in _RECORD_STATE}
                | {"version": bindparam("b_version"), "updated_at": bindparam("b_updated_at")}
            )
        )
        self.add_sync_rows = Prepared(
            insert(sync_state).on_conflict_do_nothing(index_elements=["record_id", "account"])
        )
        self.content_title = Prepared(
            select(content.c.title, content.c.title_at).where(
                content.c.account == bindparam("b_account"), content.c.external_reference == bindparam("b_ref")
            )
        )
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


class Intake:
    """The inbox and the merged records (implements :class:`lmsbridge.ports.IntakePort`)."""

    def __init__(self, sql: Sql, leases: Leases) -> None:
        self._sql = sql
        self._stmt = _Statements(sql)
        self._leases = leases

    @guard
    async def ingest(
        self,
        items: Sequence[tuple[AssignmentEvent, Sequence[PersonProgress]]],
        accounts_of: dict[str, list[str]],
        *,
        lease: Lease | None = None,
    ) -> list[Ingest]:
        """Store events in ONE transaction: merged records, pending sync rows, the inbox.

        An event whose message id is already in the inbox changes nothing and returns the
        record ids stored the first time, so its sync can be resumed. (A duplicate racing its
        twin from another process is merged again, which changes nothing: merge is a join.)
        With ``lease``, the sync rows of records created here are leased to it and returned, as
        are those of records that existed whose lease was free.
        """

        def work(conn: Connection) -> list[Ingest]:
            now = datetime.now(UTC)
            out: list[Ingest] = []
            for event, people in items:
                stored = self._stmt.inbox_ids.scalar(conn, {"source": event.source, "message_id": event.message_id})
                if stored is not None:
                    out.append(Ingest(True, tuple(stored)))
                    continue
                accts = accounts_of.get(event.source, [])
                claimed: list[SyncView] = []
                taken: list[tuple[SyncView, SyncStep | None]] = []
                ids = [self._upsert_record(conn, event, person, accts, now, lease, claimed, taken) for person in people]
                first = self._stmt.add_inbox.execute(
                    conn,
                    {
                        "message_id": event.message_id,
                        "source": event.source,
                        "event_type": event.type,
                        "received_at": event.received_at,
                        "processed_at": now,
                        "record_ids": ids,
                    },
                )
                out.append(Ingest(first == 0, tuple(ids), tuple(claimed), tuple(taken)))
            return out

        return await self._sql.write(work)

    def _upsert_record(
        self,
        conn: Connection,
        event: AssignmentEvent,
        person: PersonProgress,
        accts: list[str],
        now: datetime,
        lease: Lease | None,
        claimed: list[SyncView],
        taken: list[tuple[SyncView, SyncStep | None]],
    ) -> int:
        incoming = state_from_event(event, person)
        identity = {"b_source": event.source, "b_ref": incoming.learning_object_ref, "b_person": person.person_key}
        row = self._stmt.find_record.first(conn, identity)
        rid: int | None = None
        merged = merge(None, incoming)
        changed = True
        if row is None:
            rid = self._stmt.add_record.scalar(
                conn,
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
            )
            if rid is None:  # another process inserted it meanwhile
                row = self._stmt.find_record.first(conn, identity)
        if row is not None:
            rid = int(row["id"])
            current = record_state(row)
            merged = merge(current, incoming)
            changed = merged != current
            if changed:
                values = {f"b_{k}": v for k, v in _columns(merged).items()}
                self._stmt.set_record.execute(
                    conn, {"b_id": rid, "b_version": row["version"] + 1, "b_updated_at": now, **values}
                )
        assert rid is not None
        if not accts:
            return rid
        created = row is None  # a new record: nobody else has its sync rows, so they are ours to lease
        held = lease if created else None
        self._stmt.add_sync_rows.execute_many(
            conn,
            [
                {
                    "record_id": rid,
                    "account": account,
                    "status": PENDING,
                    "assignment_created": False,
                    "completion_created": False,
                    "attempts": 0,
                    "updated_at": now,
                    "lease_owner": held.owner if held else None,
                    "lease_until": held.until if held else None,
                    "uncertain_step": held.intent.value if held and held.intent else None,
                }
                for account in accts
            ],
        )
        if held is not None:
            key = RecordKey(event.source, merged.learning_object_ref, person.person_key)
            claimed.extend(self._fresh_view(conn, rid, account, key, merged) for account in accts)
            return rid
        if created:
            return rid
        if changed:
            conn.execute(self._stmt.reopen, {"b_id": rid, "b_accounts": accts, "b_now": now})
        if lease is not None:
            for account in accts:
                took = self._leases.take(conn, rid, account, lease.owner, lease.at, lease.until, lease.intent_of)
                if took is not None:
                    taken.append(took)
        return rid

    def _fresh_view(self, conn: Connection, rid: int, account: str, key: RecordKey, state: RecordState) -> SyncView:
        """The view of a sync row just inserted (leased, nothing written yet): only the content is read.

        No step is in doubt: an intent stored with the row is its holder's, whose create is not sent yet.
        """
        known = self._stmt.content_title.first(conn, {"b_account": account, "b_ref": key.learning_object_ref})
        synced = AccountSync(
            content_known=known is not None,
            content_title=known["title"] if known is not None else None,
            content_title_at=utc(known["title_at"]) if known is not None else None,
        )
        return SyncView(rid, account, key, state, synced, PENDING, 0, None, leased=True, version=1)

    @guard
    async def prune_inbox(self, before: datetime, *, batch: int = PRUNE_BATCH) -> int:
        """Forget message ids processed before ``before``, ``batch`` at a time, each batch a
        transaction of its own; returns how many were removed.

        One statement for them all held SQLite's write lock, every write of the workers waiting,
        for as long as it ran, and on PostgreSQL met the statement bound (30 s) after a long stop or
        a shorter retention, failing every time: the inbox then grew for good.
        """
        oldest = select(inbox.c.source, inbox.c.message_id).where(inbox.c.processed_at < before).limit(batch)
        stmt = inbox.delete().where(tuple_(inbox.c.source, inbox.c.message_id).in_(oldest))
        removed = 0
        while True:
            n = await self._sql.write(lambda conn: int(conn.execute(stmt).rowcount or 0))
            removed += n
            if n < batch:
                return removed


def _columns(state: RecordState) -> dict[str, Any]:
    """The records columns that hold a merged state."""
    return {name: int(state.rank) if name == "rank" else getattr(state, name) for name in _RECORD_STATE}
