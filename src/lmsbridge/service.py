"""Handle one event, and sync one record to one account. Imports the core and the ports only.

Two steps, each safe to repeat:

1. :meth:`Service.store` expands the event into people (a platform API call for
   team and org assignments) and stores it in one transaction (inbox + merged records +
   pending sync rows); its :meth:`~Service.targets` are then synced at once by the consumer
   or queued as sync tasks (:meth:`Service.queue_syncs`; :meth:`Service.ingest` does both).
   Records the event creates can be leased in the same transaction (``claim_up_to``), with
   the write-ahead intent of their first create, so their sync starts without a claim of its
   own and that create is sent without an intent of its own (while the stored one is fresh);
   the free rows of records that existed are claimed in that transaction too.
   A duplicate message id stores nothing and returns the records it touched the first
   time, so their syncs are done again and a crash between commit and sync loses nothing.
2. :meth:`Service.sync` brings one record up to date on one account, writing only what is
   still missing (learning object, assignment, completion). A create that may have
   happened (408, timeout) is checked by listing before it is tried again.

Handlers raise; the consumer alone decides ack, retry or dead-letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmsbridge.domain import AssignmentEvent, RecordState, SyncStep, plan_sync
from lmsbridge.domain.records import completion_of
from lmsbridge.domain.sync import (
    DEAD,
    PENDING,
    REOPENED,
    assignment_body,
    completion_body,
    content_body,
    later_same_title,
    replaces,
    same_completion,
    superseded_ids,
)
from lmsbridge.errors import (
    AlreadyExists,
    DeadLetter,
    InfrastructureFault,
    LeaseBusy,
    LmsbridgeError,
    ParkRecord,
    RetryLater,
    RetryListingFirst,
    WriteUncertain,
)
from lmsbridge.locks import KeyedLocks
from lmsbridge.people import USER_NOT_FOUND, People
from lmsbridge.ports import (
    ContentPort,
    IntakePort,
    Lease,
    LeasePort,
    PlatformPort,
    StackOnePort,
    SyncQueuePort,
    SyncView,
)

_REF = "learning_object_external_reference"

LEASE_SECONDS = 120.0
"""Default sync lease: longer than StackOne works on one request (60 s), renewed before every create."""

FRESH_INTENT_SECONDS = 1.0
"""How old an intent stored with its row may be when its create is sent, for the send to use it
rather than write its own (a renewal of the lease with it): the lease then ends at most this much
sooner than that renewal would have made it end."""


@dataclass(frozen=True, slots=True)
class Synced:
    """What one sync call wrote: the steps performed (empty when already up to date)."""

    record_id: int
    account: str
    steps: tuple[SyncStep, ...] = ()
    calls: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A sync row leased when its record was stored: the view read then, and the lease's holder.

    ``intent``: the create whose write-ahead intent was stored with the row, at ``stored_at``.
    """

    view: SyncView
    holder: str
    intent: SyncStep | None = None
    stored_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Stored:
    """What :meth:`Service.store` did: duplicate or not, the records, and the rows it leased."""

    duplicate: bool
    record_ids: tuple[int, ...]
    claimed: Mapping[tuple[int, str], Claimed] = field(default_factory=dict)


_CHANGED_ROUNDS = 3
"""How often one sync takes its record again after finding it changed by an event merged meanwhile."""


@dataclass(slots=True)
class _Attempt:
    """One sync call's lease, and whether a create of it may still be in flight at StackOne."""

    holder: str
    in_doubt: bool = False
    intended_at: float = 0.0  # when the lease was last renewed, with the intent of a create
    noted: SyncStep | None = None  # a create whose intent was stored with the row (at intended_at), not yet sent
    changed: bool = False  # the plan's last write found the record changed since its view: not marked synced


@dataclass
class Service:
    """The pipeline's logic between a decoded message and the edges."""

    intake: IntakePort
    leases: LeasePort
    content: ContentPort
    stackone: StackOnePort
    queue: SyncQueuePort
    accounts_of: Mapping[str, list[str]]
    platforms: Mapping[str, PlatformPort]
    people: People
    owner: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    lease_seconds: float = LEASE_SECONDS
    clock: Callable[[], float] = time.time
    delete_superseded: bool = False  # delete a completion a better retake replaced (default: keep it as history)
    # At most (lease - StackOne's timeout) / 2 (the runtime's choice): a create sent with an intent
    # stored this long ago still has its lease for longer than the request can take.
    fresh_intent_seconds: float = FRESH_INTENT_SECONDS
    # Numbers this service's lease holders (see _holder); the owner makes them unique across processes.
    _holders: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    # Kept only while held or awaited: a dict of locks grew by one per learning object ever seen.
    _content_locks: KeyedLocks[tuple[str, str]] = field(default_factory=KeyedLocks, init=False, repr=False)
    # Leases this process may still hold, left by a sync a database fault cut before it could give
    # its lease back (a PostgreSQL restart): (record, account) -> (holder, until). The next sync of
    # the row here takes the lease again under the same holder instead of waiting it out.
    _orphans: dict[tuple[int, str], tuple[str, float]] = field(default_factory=dict, init=False, repr=False)

    # --- step 1: events -----------------------------------------------------------------

    async def ingest(self, event: AssignmentEvent) -> tuple[bool, tuple[int, ...]]:
        """Store ``event`` and queue its sync tasks; returns (duplicate, record ids)."""
        stored = await self.store(event)
        await self.queue_syncs(event, self.targets(event, stored.record_ids))
        return stored.duplicate, stored.record_ids

    async def store(self, event: AssignmentEvent, *, claim_up_to: int = 0) -> Stored:
        """Store ``event`` (inbox, merged records, pending sync rows).

        A duplicate stores nothing and returns the records it touched the first time, so their
        syncs can be done again: a crash between commit and sync loses nothing. When the event
        has at most ``claim_up_to`` (record, account) targets, the rows of records it creates,
        and those of records that existed whose lease is free, are leased in the same
        transaction: the caller must sync them (``claimed=``) at once.
        """
        people = list(event.people)
        if event.needs_expansion:
            platform = self.platforms.get(event.source)
            if platform is None:
                raise DeadLetter("no_platform_api", f"source {event.source} has no api_base_url/api_key to expand with")
            people = await platform.members(event.assignment_id)
        accounts = self.accounts_of.get(event.source, [])
        holder = self._holder()
        now = self.clock()
        lease = None
        if len(people) * len(accounts) <= claim_up_to:
            # A new record's first create is its assignment's (after its learning object's, if that
            # is unknown): its write-ahead intent is stored with the row, so its send writes none.
            # A record that existed has the intent of its plan's first create noted as its row is claimed.
            lease = Lease(holder, now + self.lease_seconds, SyncStep.CREATE_ASSIGNMENT, at=now, intent_of=self._first)
        [result] = await self.intake.ingest([(event, people)], {event.source: list(accounts)}, lease=lease)
        claimed = {(v.record_id, v.account): Claimed(v, holder, step, now) for v, step in result.taken}
        intent = lease.intent if lease is not None else None
        claimed |= {(v.record_id, v.account): Claimed(v, holder, intent, now) for v in result.claimed}
        return Stored(result.duplicate, result.record_ids, claimed)

    def _first(self, view: SyncView) -> SyncStep | None:
        """The create a row's sync sends first, by the plan for ``view``."""
        return plan_sync(view.state, view.synced, delete_superseded=self.delete_superseded).first_create

    def _holder(self) -> str:
        """A lease holder of its own for one sync call (or one event's freshly stored rows), even within a process."""
        return f"{self.owner}:{next(self._holders):x}"  # a counter: uuid4 per call was 2 % of a busy worker

    def targets(self, event: AssignmentEvent, record_ids: tuple[int, ...]) -> list[tuple[int, str]]:
        """Every (record, account) an event's records are synced to."""
        return [(rid, account) for rid in record_ids for account in self.accounts_of.get(event.source, [])]

    async def queue_syncs(self, event: AssignmentEvent, targets: list[tuple[int, str]]) -> None:
        """Queue one sync task per (record, account): confirmed publishes, all in flight at once.

        A failure raises for the event to be retried (a repeated sync task is harmless).
        """
        received_at = event.received_at.timestamp()
        await asyncio.gather(
            *(
                self.queue.queue_sync(rid, account, correlation_id=event.correlation_id, received_at=received_at)
                for rid, account in targets
            )
        )

    # --- step 2: sync -------------------------------------------------------------------

    async def sync(
        self, record_id: int, account: str, *, revive: bool = False, claimed: Claimed | None = None
    ) -> Synced:
        """Write what ``account`` still lacks for the record; raises for the consumer to settle.

        A dead record stays dead unless ``revive`` (an operator replayed its dead letter).
        ``claimed``: the row was leased when it was stored (:meth:`store`): no claim is needed.
        """
        view: SyncView | None
        if claimed is not None:
            attempt = _Attempt(claimed.holder, intended_at=claimed.stored_at, noted=claimed.intent)
            view = claimed.view
        else:
            attempt = _Attempt(self._orphaned(record_id, account) or self._holder())
            try:
                view = await self.leases.claim(
                    record_id, account, attempt.holder, self.clock(), self.lease_seconds, revive=revive
                )
            except InfrastructureFault:
                self._orphan(record_id, account, attempt.holder)  # the claim may have committed unanswered
                raise
        holder = attempt.holder
        if view is None or (view.status == DEAD and not revive):
            return Synced(record_id, account)  # gone, or dead: nothing to write
        if not view.leased:
            if plan_sync(view.state, view.synced, delete_superseded=self.delete_superseded).done:
                return Synced(record_id, account)
            raise LeaseBusy(f"record {record_id} is being synced by another consumer")
        try:
            result = await self._sync_claimed(view, attempt)
            for _ in range(_CHANGED_ROUNDS):
                if not attempt.changed:
                    break
                # An event was merged into the record while this plan was being written (a completion
                # while its assignment was created): the lease was given back with the row still
                # pending. Take it again and write the rest now, rather than leave the row to the
                # retry that event queued (or, had its consumer seen nothing to write, to the sweeper).
                attempt.changed = False
                view = await self.leases.claim(record_id, account, holder, self.clock(), self.lease_seconds)
                if view is None or not view.leased or view.status == DEAD:
                    break
                more = await self._sync_claimed(view, attempt)
                result = Synced(record_id, account, result.steps + more.steps, result.calls + more.calls)
        except BaseException:
            # A create whose outcome is unknown (no answer, 408, cancelled mid-request) keeps the
            # lease, renewed when its intent was written: StackOne may still be working on it, and
            # nobody may list the LMS before the lease runs out. Otherwise the retry may start at once.
            if not attempt.in_doubt:
                try:
                    # An intent stored with the row whose create was never sent goes with the lease.
                    await self.leases.release(record_id, account, holder, clear_intent=attempt.noted is not None)
                except InfrastructureFault:
                    self._orphan(record_id, account, holder)
            raise
        return result

    def _orphan(self, record_id: int, account: str, holder: str) -> None:
        """Remember a lease a database fault kept us from giving back (forgetting those run out)."""
        now = self.clock()
        for key in [k for k, (_, until) in self._orphans.items() if until < now]:
            del self._orphans[key]
        self._orphans[(record_id, account)] = (holder, now + self.lease_seconds)

    def _orphaned(self, record_id: int, account: str) -> str | None:
        """The holder of a lease on the row this process may still hold, taken (once) for a new sync."""
        holder, until = self._orphans.pop((record_id, account), ("", 0.0))
        return holder if holder and until >= self.clock() else None

    async def _sync_claimed(self, view: SyncView, attempt: _Attempt) -> Synced:
        """Write the missing steps; the last write also marks the record synced and frees the lease."""
        record_id, account = view.record_id, view.account
        plan = plan_sync(view.state, view.synced, delete_superseded=self.delete_superseded)
        if later_same_title(view.state, view.synced):
            state = view.state
            await self.content.mark_content(account, [(state.learning_object_ref, state.title, state.title_at)])
        if plan.done:
            await self._release_synced(view, attempt)
            return Synced(record_id, account)
        user_id = await self.people.resolve(account, view.state.email)
        calls = 0
        looked_again = False
        index = 0
        while index < len(plan.steps):
            step = plan.steps[index]
            try:
                calls += await self._perform(view, step, user_id, attempt, last=index == len(plan.steps) - 1)
            except ParkRecord as exc:
                # The LMS answered 404 for the id we knew: the user may have been deleted and created
                # again. Look them up afresh, once; the step is tried again with the new id.
                if exc.reason != USER_NOT_FOUND or looked_again:
                    raise
                looked_again = True
                stale, user_id = user_id, await self.people.look_again(account, view.state.email, user_id)
                if user_id == stale:
                    raise
                continue
            index += 1
        return Synced(record_id, account, plan.steps, calls)

    async def _release_synced(self, view: SyncView, attempt: _Attempt) -> None:
        """Give the lease back with the row marked synced, if the record is still the version planned
        from; a newer one leaves it pending and ``attempt.changed`` set (the caller writes the rest)."""
        attempt.changed = not await self.leases.release(
            view.record_id, view.account, attempt.holder, synced=True, version=view.version
        )

    async def _perform(self, view: SyncView, step: SyncStep, user_id: str, attempt: _Attempt, *, last: bool) -> int:
        """One write. A create is preceded by its write-ahead intent, so a crash at any point
        (SIGKILL mid-request, a timeout, a 408) leaves the step marked: the next sync of the
        record lists the LMS before creating, and no second copy is ever written. A row a
        reconcile pass reopened (:data:`~lmsbridge.domain.sync.REOPENED`) lists before each create."""
        account, rid, state = view.account, view.record_id, view.state
        if step is SyncStep.UPSERT_CONTENT:
            calls = await self._upsert_content(account, state)
            if last:  # a new title alone: nothing else marks the row synced or gives its lease back
                await self._release_synced(view, attempt)
            return calls
        if step is SyncStep.DELETE_SUPERSEDED:
            return await self._delete_superseded(view, user_id, attempt, last=last)
        calls = 0
        if view.uncertain_step in (step.value, REOPENED):
            calls += 1
            existing = await self._existing(account, user_id, step, state)
            if existing is not None:
                attempt.changed = not await self.leases.mark_written(
                    rid,
                    account,
                    step,
                    existing or None,
                    last=last,
                    completion=completion_of(state),
                    version=view.version,
                )
                return calls

        holder = attempt.holder

        async def intend() -> None:
            # After the rate limiter's grant, so no wait can outlast the lease between this and the send.
            noted, attempt.noted = attempt.noted, None
            if noted is not step or self.clock() - attempt.intended_at > self.fresh_intent_seconds:
                if not await self.leases.intend(rid, account, holder, step, self.clock(), self.lease_seconds):
                    raise LeaseBusy(f"record {rid} lost its lease before {step.value}")
                attempt.intended_at = self.clock()
            # else: this intent, and the lease, were stored with the row moments ago: written already.
            attempt.in_doubt = True

        try:
            if step is SyncStep.CREATE_ASSIGNMENT:
                body = assignment_body(state)
                lms_id = await self.stackone.create_assignment(account, user_id, body, before_send=intend)
            else:
                body = completion_body(state)
                lms_id = await self.stackone.create_completion(account, user_id, body, before_send=intend)
        except AlreadyExists as exists:
            lms_id = None
            if step is SyncStep.CREATE_COMPLETION:
                # Answered: a failed listing below releases the lease; the intent stays, so the
                # retry lists before it creates again.
                attempt.in_doubt = False
                lms_id = await self._completion_that_exists(view, user_id, attempt, exists)
                calls += 1
        except WriteUncertain as uncertain:
            # Check at once (the listing waits for the rate limiter like any call): in the common
            # case the write landed and is recorded now. A failed or empty check proves nothing
            # (StackOne may still be writing): the intent and the lease stay, and the next attempt,
            # after the lease, lists again before it writes.
            found = await self._existing(account, user_id, step, state)
            if found is None:
                wait = max(0.0, attempt.intended_at + self.lease_seconds - self.clock())
                raise WriteUncertain(f"{uncertain}; not listed yet", delay=wait) from uncertain
            attempt.in_doubt = False
            attempt.changed = not await self.leases.mark_written(
                rid, account, step, found or None, last=last, completion=completion_of(state), version=view.version
            )
            return calls + 2
        except LmsbridgeError as exc:
            if attempt.in_doubt:
                attempt.in_doubt = False  # answered: the lease goes back and the retry may come at once
                if not isinstance(exc, RetryListingFirst):  # a 5xx keeps the intent: the retry lists first
                    await self._refused(rid, account, holder)
            raise
        attempt.in_doubt = False  # answered: written (the intent stays until it is recorded)
        attempt.changed = not await self.leases.mark_written(
            rid, account, step, lms_id, last=last, completion=completion_of(state), version=view.version
        )
        return calls + 1

    async def _refused(self, record_id: int, account: str, holder: str) -> None:
        """StackOne refused a create: nothing was written, so its intent goes (the next attempt need
        not list first). Best effort: a database fault leaves the intent, which costs one listing."""
        with contextlib.suppress(InfrastructureFault):
            await self.leases.intend(record_id, account, holder, None, self.clock(), self.lease_seconds)

    async def _completion_that_exists(
        self, view: SyncView, user_id: str, attempt: _Attempt, exists: AlreadyExists
    ) -> str | None:
        """The LMS id of the completion a 409 says exists, found by listing; ``None`` if it has none.

        An LMS that keeps one completion per person and object answers a retake's create 409 too:
        then the completion it holds is the earlier one, not this. Recording the retake as written
        would leave the LMS on the old result for good (and ``delete_superseded`` would delete
        the only completion it has), so that is a dead letter, ``completion_conflict``. A 409 on
        a first completion still counts as written: the LMS holds one for the object.
        """
        found = await self._existing(view.account, user_id, SyncStep.CREATE_COMPLETION, view.state)
        if found is not None or view.synced.completion is None:
            return found or None
        await self._refused(view.record_id, view.account, attempt.holder)
        raise DeadLetter(
            "completion_conflict",
            f"{exists}: the LMS holds another completion of this learning object and refused the"
            " better one (a retake); it keeps one completion per person and object. Delete the old"
            " one in the LMS, then replay",
        )

    async def _existing(self, account: str, user_id: str, step: SyncStep, state: RecordState) -> str | None:
        """The LMS id ('' when it has none) of the write ``step`` means for ``state`` if it is there, else None.

        An assignment is there when one for the learning object is; a completion only when one
        with the same result, score and time is (a retake's earlier Fail is not the Pass meant now).
        A row listed without its learning object reference (the spec lets it be null) that may be
        this write (for a completion: the same result, score and time) is no proof either way: the
        record is dead-lettered as ``lms_row_unreadable`` (its intent kept, so a replay lists again)
        rather than written a second time.
        """
        ref = state.learning_object_ref
        if step is SyncStep.CREATE_ASSIGNMENT:
            rows = await self.stackone.list_user_assignments(account, user_id)
            found = [row for row in rows if row.get(_REF) == ref]
            unreadable = [row for row in rows if not row.get(_REF)]
        else:
            body = completion_body(state)
            rows = await self.stackone.list_user_completions(account, user_id)
            found = [row for row in rows if same_completion(row, body)]
            unreadable = [row for row in rows if not row.get(_REF) and same_completion({**row, _REF: ref}, body)]
        if found:
            return str(found[0].get("id") or "")
        if unreadable:
            kind = "assignment" if step is SyncStep.CREATE_ASSIGNMENT else "completion"
            raise DeadLetter(
                "lms_row_unreadable",
                f"the LMS lists a {kind} of this person without its learning object reference that may be"
                f" this one ({ref}); not written again while the two cannot be told apart. Check the"
                " person's record in the LMS, then replay",
            )
        return None

    async def _delete_superseded(self, view: SyncView, user_id: str, attempt: _Attempt, *, last: bool) -> int:
        """Delete the completions a better retake replaced (``delete_superseded``); a 404 counts as done.

        Idempotent, so it needs no intent: a crash before it is recorded deletes again, harmlessly.
        """
        ids = superseded_ids(view.synced, replacing=replaces(view.state, view.synced))
        for completion_id in ids:
            await self.stackone.delete_completion(view.account, user_id, completion_id)
        attempt.changed = not await self.leases.mark_written(
            view.record_id, view.account, SyncStep.DELETE_SUPERSEDED, None, last=last, version=view.version
        )
        return len(ids)

    async def _upsert_content(self, account: str, state: RecordState) -> int:
        """Upsert a learning object once per (account, object, title), even when many records need it at once.

        A record whose title is older than the one written upserts nothing, so the newest title
        (by its event's time) stays whatever the order of arrival. Uses the batch endpoint (some
        LMSs accept single content writes only rarely); the lock per (account, object) keeps
        concurrent syncs in this process from repeating it.
        """
        ref, title = state.learning_object_ref, state.title
        item = (ref, title, state.title_at)
        async with self._content_locks.hold((account, ref)):
            if not await self.content.missing_content(account, [item]):
                # A concurrent sync upserted it while this one waited, or the LMS has this title
                # already: remember its later time, so an older title arriving next is not sent.
                await self.content.mark_content(account, [item])
                return 0
            errors = await self.stackone.upsert_content_batch(account, [content_body(ref, title)])
            if errors and errors[0]:
                raise DeadLetter("content_rejected", f"StackOne rejected learning object {ref}", detail=errors[0])
            await self.content.mark_content(account, [item])
        return 1

    # --- parked records (a sync's outcome is settled by lmsbridge.broker.settle) ----------

    async def unpark(self, account: str, reason: str, *, correlation_id: str) -> int:
        """Queue the sync of records parked for ``reason`` again; returns how many."""
        ids = await self.leases.parked(account, reason)
        for rid in ids:
            await self.leases.set_status(rid, account, PENDING)
            await self.queue.queue_sync(rid, account, correlation_id=correlation_id, received_at=self.clock())
        return len(ids)


def describe(exc: BaseException) -> dict[str, Any]:
    """Loggable fields of an exception (messages never hold secrets)."""
    out: dict[str, Any] = {"error": str(exc), "error_type": type(exc).__name__}
    for attr in ("reason", "status", "delay"):
        if hasattr(exc, attr):
            out[attr] = getattr(exc, attr)
    if isinstance(exc, ParkRecord | DeadLetter | RetryLater):
        out["outcome"] = type(exc).__name__
    return out
