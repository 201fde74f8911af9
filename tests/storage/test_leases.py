"""Sync leases on both databases: one owner at a time, dead rows only when revived, intents need the lease."""

from __future__ import annotations

from lmsbridge.domain.sync import SyncStep
from lmsbridge.storage import DEAD, PENDING, SYNCED, Repository
from tests.storage.conftest import ACCOUNTS, event


async def _record(repo: Repository) -> int:
    [created] = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    return created.record_ids[0]


async def test_lease_excludes_a_second_owner_until_it_expires(repo: Repository) -> None:
    """Only one worker holds a record's sync lease at a time; an expired lease can be taken."""
    rid = await _record(repo)

    async def leased(owner: str, now: float) -> bool:
        view = await repo.leases.claim(rid, "acc-1", owner, now, 30)
        assert view is not None
        return view.leased

    assert await leased("w1", 1000.0)
    assert not await leased("w2", 1010.0)
    assert await leased("w2", 1031.0)
    await repo.leases.release(rid, "acc-1", "w2")
    assert await leased("w1", 1032.0)


async def test_claim_leases_dead_rows_only_when_revived(repo: Repository) -> None:
    """A dead row is leased only when revived (it becomes pending); a synced row is leased, the plan decides."""
    rid = await _record(repo)
    await repo.leases.set_status(rid, "acc-1", SYNCED)
    await repo.leases.set_status(rid, "acc-2", DEAD, reason="stackone_422")
    synced = await repo.leases.claim(rid, "acc-1", "w1", 1000.0, 30)
    dead = await repo.leases.claim(rid, "acc-2", "w1", 1000.0, 30)
    assert synced is not None
    assert dead is not None
    assert (synced.leased, synced.status, dead.leased, dead.status) == (True, SYNCED, False, DEAD)
    revived = await repo.leases.claim(rid, "acc-2", "w1", 1000.0, 30, revive=True)
    assert revived is not None
    assert (revived.leased, revived.status) == (True, PENDING)


async def test_an_intent_is_noted_only_by_the_lease_holder(repo: Repository) -> None:
    """``intend`` notes the step in doubt for the lease's holder and refuses anyone else."""
    rid = await _record(repo)
    await repo.leases.claim(rid, "acc-1", "w1", 1000.0, 30)
    assert not await repo.leases.intend(rid, "acc-1", "w2", SyncStep.CREATE_ASSIGNMENT, 1001.0, 30)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert view.uncertain_step is None
    assert await repo.leases.intend(rid, "acc-1", "w1", SyncStep.CREATE_ASSIGNMENT, 1001.0, 30)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert view.uncertain_step == SyncStep.CREATE_ASSIGNMENT.value
