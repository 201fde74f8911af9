"""Leases and intents taken as an event is stored: fewer writes, and no safety lost.

The consumer stores a new record's sync rows already leased to it, with the intent of the create
its sync sends first (``Service.store(claim_up_to=...)``); the send uses that intent instead of
writing one, while it is fresh. The free rows of a record that existed are claimed in that
transaction too, so their sync needs no claim of its own. These tests drive two :class:`Service` instances (two worker
processes on one SQLite file) against the StackOne stand-in over real HTTP, with clocks the
test moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from lmsbridge.domain.records import state_from_event
from lmsbridge.errors import LeaseBusy, ParkRecord
from lmsbridge.service import Claimed, Service, Synced
from lmsbridge.storage import Repository
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import two_workers
from tests.test_convergence import EVENTS

ACCOUNT = "acc-intent"
EMAIL = "jane@acme.example"
LEASE = 30.0


@dataclass
class Workers:
    """Two workers' services on one database, their clocks, and the repository underneath."""

    a: Service
    b: Service
    now_a: list[float]
    now_b: list[float]
    repo: Repository


@pytest.fixture
async def workers(stackone: StackOneStandIn, tmp_path: Path) -> AsyncIterator[Workers]:
    """Two workers sharing a SQLite file, their StackOne clients on the stand-in (5 s a request)."""
    async with two_workers(stackone, tmp_path / "intent.db", ACCOUNT, LEASE) as (repo, built):
        [(a, now_a), (b, now_b)] = built
        yield Workers(a, b, now_a, now_b, repo)


async def _stored(service: Service) -> tuple[int, Claimed]:
    """The first event stored as the consumer stores it: its new row leased to ``service``."""
    stored = await service.store(EVENTS[0], claim_up_to=1)
    [rid] = stored.record_ids
    return rid, stored.claimed[(rid, ACCOUNT)]


async def _row(repo: Repository, rid: int) -> tuple[str | None, float | None]:
    """The sync row's intent and lease end, as another process would read them."""
    async with repo.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT uncertain_step, lease_until FROM sync_state WHERE record_id = :r AND account = :a"),
                {"r": rid, "a": ACCOUNT},
            )
        ).one()
    return row[0], row[1]


def _creates(stackone: StackOneStandIn) -> int:
    return sum(1 for r in stackone.requests if r.method == "POST" and r.path.endswith("/assignments"))


def _listings(stackone: StackOneStandIn) -> int:
    return sum(1 for r in stackone.requests if r.method == "GET" and r.path.endswith("/assignments"))


async def _status(repo: Repository, rid: int) -> str:
    """The sync row's status."""
    view = await repo.leases.load_sync(rid, ACCOUNT)
    assert view is not None
    return view.status


def _assignment_once(stackone: StackOneStandIn) -> None:
    """The assignment was created once, the LMS holds one, and every request met the spec."""
    assert _creates(stackone) == 1, "the assignment was created more than once"
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert not stackone.violations


async def _sent(stackone: StackOneStandIn, path: str) -> None:
    """Wait until a request to ``path`` is in flight at the stand-in (10 s at most: then the test fails)."""
    async with asyncio.timeout(10):
        while not any(r.path.endswith(path) and r.status == 0 for r in stackone.requests):
            await asyncio.sleep(0.01)


async def _warm(workers: Workers, stackone: StackOneStandIn) -> None:
    """The person and the learning object known (its title as of the completion, the later
    event), so a sync's only writes are its creates."""
    stackone.add_user(ACCOUNT, EMAIL)
    await workers.a.people.resolve(ACCOUNT, EMAIL)
    await workers.b.people.resolve(ACCOUNT, EMAIL)
    state = state_from_event(EVENTS[1], EVENTS[1].people[0])
    await workers.repo.content.mark_content(ACCOUNT, [(state.learning_object_ref, state.title, state.title_at)])


async def _watched_sync(
    repo: Repository, stackone: StackOneStandIn, service: Service, claimed: Claimed, path: str
) -> tuple[Synced, tuple[str | None, float | None], int]:
    """Sync ``claimed`` with its create to ``path`` held 0.3 s at StackOne (then written): the
    result, the row as another process reads it while the create is in flight, and the
    transactions the sync committed."""
    rid = claimed.view.record_id
    stackone.fail_next(0, delay=0.3, path_contains=path)
    before = repo.transactions
    syncing = asyncio.create_task(service.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, path)
    in_flight = await _row(repo, rid)
    result = await syncing
    return result, in_flight, repo.transactions - before


async def test_a_new_record_is_created_with_its_intent_stored_beforehand_and_one_transaction_for_its_sync(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """While the create is at StackOne, the row already says it may be written (stored with it);
    the sync itself commits one transaction (the step recorded), not two (an intent, then that)."""
    await _warm(workers, stackone)
    rid, claimed = await _stored(workers.a)
    assert await _row(workers.repo, rid) == ("create_assignment", 1000.0 + LEASE)

    result, in_flight, transactions = await _watched_sync(workers.repo, stackone, workers.a, claimed, "/assignments")

    assert in_flight == ("create_assignment", 1000.0 + LEASE)
    assert transactions == 1
    assert result.steps
    assert _creates(stackone) == 1
    assert _listings(stackone) == 0
    assert await _row(workers.repo, rid) == (None, None)  # recorded: no doubt left, lease given back
    assert await _status(workers.repo, rid) == "synced"
    assert not stackone.violations


async def test_a_sync_that_waited_past_the_fresh_window_renews_its_lease_with_the_intent_before_sending(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A user lookup that took longer than the stored intent may be used: the send writes it again,
    with a lease that runs from now, as for any create."""
    stackone.add_user(ACCOUNT, EMAIL)
    rid, claimed = await _stored(workers.a)
    stackone.fail_next(0, delay=0.3, path_contains="/users")  # the lookup hangs ...
    stackone.fail_next(0, delay=0.3, path_contains="/assignments")
    syncing = asyncio.create_task(workers.a.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, "/users")
    workers.now_a[0] += 10.0  # ... for 10 s by the worker's clock
    await _sent(stackone, "/assignments")
    in_flight = await _row(workers.repo, rid)
    await syncing

    assert in_flight == ("create_assignment", 1010.0 + LEASE)
    _assignment_once(stackone)


async def test_a_stored_lease_that_ran_out_before_the_send_stops_the_create_and_the_new_holder_writes_once(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A worker stalled past the lease stored with the row does not send on the stored intent;
    the worker that took the row over lists (the intent may have been sent) and creates once."""
    stackone.add_user(ACCOUNT, EMAIL)
    rid, claimed = await _stored(workers.a)
    stackone.fail_next(0, delay=1.0, path_contains="/users")  # A's user lookup hangs for 1 s
    stalled = asyncio.create_task(workers.a.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, "/users")
    workers.now_a[0] += LEASE + 1  # while A waits, its lease runs out ...
    workers.now_b[0] += LEASE + 1
    assert (await workers.b.sync(rid, ACCOUNT)).steps  # ... and B takes the row over and writes it

    with pytest.raises(LeaseBusy):
        await stalled
    assert _creates(stackone) == 1, "the stalled worker created after losing its lease"
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert not stackone.violations


async def test_a_sync_that_fails_before_sending_leaves_no_intent_so_the_next_one_creates_without_listing(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """The person is not in the LMS yet: nothing was sent, so the stored intent goes with the
    lease; once they are, the next sync creates straight away (no listing first) and once."""
    rid, claimed = await _stored(workers.a)
    with pytest.raises(ParkRecord):
        await workers.a.sync(rid, ACCOUNT, claimed=claimed)
    assert await _row(workers.repo, rid) == (None, None)

    stackone.add_user(ACCOUNT, EMAIL)
    assert (await workers.b.sync(rid, ACCOUNT)).steps

    assert _creates(stackone) == 1
    assert _listings(stackone) == 0
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert not stackone.violations


async def test_a_worker_gone_after_storing_a_new_record_leaves_it_to_be_listed_then_written_once(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """Worker A stores the record and is gone before its sync says anything (killed): the row says
    a create may have been sent, so once A's lease has run out B lists first, then writes it once."""
    stackone.add_user(ACCOUNT, EMAIL)
    rid, _ = await _stored(workers.a)  # and A is killed here
    with pytest.raises(LeaseBusy):  # while A might still send, nobody else writes
        await workers.b.sync(rid, ACCOUNT)

    workers.now_b[0] += LEASE + 1
    assert (await workers.b.sync(rid, ACCOUNT)).steps

    assert _listings(stackone) == 1, "B did not list before creating"
    _assignment_once(stackone)


async def test_a_worker_killed_mid_create_on_the_stored_intent_is_not_written_again(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A's create, sent on the intent stored with the row, is in flight (the LMS writes it) when A
    is gone; B waits out the stored lease, lists, finds the assignment and does not create it again."""
    stackone.add_user(ACCOUNT, EMAIL)
    rid, claimed = await _stored(workers.a)
    stackone.fail_next(0, delay=1.0, path_contains="/assignments")  # hangs 1 s, then writes
    dying = asyncio.create_task(workers.a.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, "/assignments")
    dying.cancel()  # the process is gone; its request is not
    with pytest.raises(asyncio.CancelledError):
        await dying
    with pytest.raises(LeaseBusy):
        await workers.b.sync(rid, ACCOUNT)
    await asyncio.sleep(1.3)
    assert len(stackone.assignments(ACCOUNT)) == 1

    workers.now_b[0] += LEASE + 1
    assert (await workers.b.sync(rid, ACCOUNT)).steps  # B records the write it found

    assert _creates(stackone) == 1, "B created the assignment a second time"
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert await _status(workers.repo, rid) == "synced"
    assert not stackone.violations


async def test_a_completion_of_an_existing_record_is_claimed_with_its_intent_as_it_is_stored(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """The completion's event leases the record's free row in the transaction that stores it, with
    the intent of the completion's create: its sync commits one transaction (the completion
    recorded), no claim or intent of its own, and the row says "may be written" while it is sent."""
    await _warm(workers, stackone)
    rid, claimed = await _stored(workers.a)
    await workers.a.sync(rid, ACCOUNT, claimed=claimed)

    stored = await workers.b.store(EVENTS[1], claim_up_to=1)
    taken = stored.claimed.get((rid, ACCOUNT))
    assert taken is not None, "the completion's row was not leased as it was stored"
    assert taken.view.leased
    assert taken.view.synced.assignment_created  # read as a claim reads it: what is written already
    assert await _row(workers.repo, rid) == ("create_completion", 1000.0 + LEASE)

    result, in_flight, transactions = await _watched_sync(workers.repo, stackone, workers.b, taken, "/completions")

    assert in_flight == ("create_completion", 1000.0 + LEASE)
    assert transactions == 1
    assert [s.value for s in result.steps] == ["create_completion"]
    assert len(stackone.completions(ACCOUNT)) == 1
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert await _row(workers.repo, rid) == (None, None)
    assert await _status(workers.repo, rid) == "synced"
    assert not stackone.violations


async def test_a_completion_stored_while_another_worker_writes_the_record_leaves_it_to_that_worker(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A's assignment is at StackOne when B stores the completion: B leases nothing (A holds the
    row) and its sync waits (LeaseBusy); A, finding the record changed, writes the completion too."""
    await _warm(workers, stackone)
    rid, claimed = await _stored(workers.a)
    stackone.fail_next(0, delay=0.5, path_contains="/assignments")
    writing = asyncio.create_task(workers.a.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, "/assignments")

    stored = await workers.b.store(EVENTS[1], claim_up_to=1)
    assert (rid, ACCOUNT) not in stored.claimed
    with pytest.raises(LeaseBusy):
        await workers.b.sync(rid, ACCOUNT)
    await writing

    assert len(stackone.assignments(ACCOUNT)) == 1
    assert len(stackone.completions(ACCOUNT)) == 1
    assert await _status(workers.repo, rid) == "synced"
    assert not stackone.violations


async def test_an_event_for_a_dead_record_leases_nothing_and_writes_nothing(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A record dead-lettered stays dead when its completion arrives: its row is not leased as the
    event is stored, and its sync writes nothing (only an operator's replay revives it)."""
    await _warm(workers, stackone)
    rid, claimed = await _stored(workers.a)
    await workers.a.sync(rid, ACCOUNT, claimed=claimed)
    await workers.repo.leases.set_status(rid, ACCOUNT, "dead", reason="test", error="dead-lettered by the test")

    stored = await workers.b.store(EVENTS[1], claim_up_to=1)
    assert (rid, ACCOUNT) not in stored.claimed
    assert not (await workers.b.sync(rid, ACCOUNT)).steps

    assert len(stackone.completions(ACCOUNT)) == 0
    assert await _status(workers.repo, rid) == "dead"
    assert not stackone.violations


async def test_a_record_whose_create_may_be_out_there_keeps_that_doubt_when_its_next_event_claims_it(
    workers: Workers, stackone: StackOneStandIn
) -> None:
    """A's assignment create reached the LMS as A died (the row notes it may be written). B's
    completion event claims the row once A's lease ran out, noting nothing over that doubt: B
    lists, finds the assignment, and creates only the completion."""
    await _warm(workers, stackone)
    rid, claimed = await _stored(workers.a)
    stackone.fail_next(0, delay=1.0, path_contains="/assignments")  # hangs 1 s, then writes
    dying = asyncio.create_task(workers.a.sync(rid, ACCOUNT, claimed=claimed))
    await _sent(stackone, "/assignments")
    dying.cancel()  # the process is gone; its request is not
    with pytest.raises(asyncio.CancelledError):
        await dying
    await asyncio.sleep(1.3)
    assert len(stackone.assignments(ACCOUNT)) == 1

    workers.now_b[0] += LEASE + 1
    stored = await workers.b.store(EVENTS[1], claim_up_to=1)
    taken = stored.claimed.get((rid, ACCOUNT))
    assert taken is not None
    assert await _row(workers.repo, rid) == ("create_assignment", 1031.0 + LEASE)
    await workers.b.sync(rid, ACCOUNT, claimed=taken)

    assert _listings(stackone) == 1, "B did not list before its create"
    assert _creates(stackone) == 1, "B created the assignment a second time"
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert len(stackone.completions(ACCOUNT)) == 1
    assert await _status(workers.repo, rid) == "synced"
    assert not stackone.violations
