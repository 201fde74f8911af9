"""Sync leases on both databases: one owner at a time, dead rows only when revived, intents need the lease."""

from __future__ import annotations

from lmsbridge.domain.sync import SyncStep
from lmsbridge.storage import DEAD, PARKED, PENDING, SYNCED, Repository
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


async def test_a_status_asked_only_from_some_statuses_leaves_any_other_row_alone(repo: Repository) -> None:
    """``only_from``: a pause's note (pending, with its reason) and a dead letter's mark change a pending
    row, and leave alone a row another worker marked synced meanwhile."""
    rid = await _record(repo)
    await repo.leases.set_status(rid, "acc-1", SYNCED)
    await repo.leases.set_status(rid, "acc-1", PENDING, reason="stackone_403", error="403", only_from=(PENDING,))
    await repo.leases.set_status(rid, "acc-1", DEAD, reason="stackone_422", only_from=(PENDING, PARKED, DEAD))
    await repo.leases.set_status(rid, "acc-2", PENDING, reason="stackone_403", error="403", only_from=(PENDING,))
    synced = await repo.leases.load_sync(rid, "acc-1")
    noted = await repo.leases.load_sync(rid, "acc-2")
    assert synced is not None
    assert noted is not None
    assert (synced.status, noted.status) == (SYNCED, PENDING)
    counts = await repo.stats.status_counts()
    assert counts == {"acc-1": {SYNCED: 1}, "acc-2": {PENDING: 1}}
    await repo.leases.set_status(rid, "acc-2", DEAD, reason="stackone_422", only_from=(PENDING, PARKED, DEAD))
    dead = await repo.leases.load_sync(rid, "acc-2")
    assert dead is not None
    assert dead.status == DEAD


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


async def test_the_last_write_marks_synced_only_a_record_unchanged_since_its_view(repo: Repository) -> None:
    """A plan's last write read at one version marks the row synced (and frees the lease) only while
    the record is still that version: a completion merged while the assignment was being written
    leaves the row pending, its lease free, with the assignment recorded as written."""
    rid = await _record(repo)
    view = await repo.leases.claim(rid, "acc-1", "w1", 1000.0, 30)
    other = await repo.leases.claim(rid, "acc-2", "w1", 1000.0, 30)
    assert view is not None
    assert other is not None
    done = event("m2", "assignment.completed")
    await repo.intake.ingest([(done, done.people)], ACCOUNTS)

    marked = await repo.leases.mark_written(
        rid, "acc-1", SyncStep.CREATE_ASSIGNMENT, "lms-1", last=True, version=view.version
    )

    after = await repo.leases.load_sync(rid, "acc-1")
    assert after is not None
    assert (marked, after.status, after.synced.assignment_created, after.version) == (
        False,
        PENDING,
        True,
        view.version + 1,
    )
    assert (await repo.leases.claim(rid, "acc-1", "w2", 1001.0, 30)).leased  # type: ignore[union-attr]
    assert not await repo.leases.release(rid, "acc-2", "w1", synced=True, version=other.version)
    assert await repo.leases.release(rid, "acc-2", "w1", version=other.version)  # nothing asked: nothing refused
    fresh = await repo.leases.claim(rid, "acc-2", "w1", 1002.0, 30)
    assert fresh is not None
    assert await repo.leases.release(rid, "acc-2", "w1", synced=True, version=fresh.version)
    synced = await repo.leases.load_sync(rid, "acc-2")
    assert synced is not None
    assert synced.status == SYNCED
