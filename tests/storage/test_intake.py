"""Intake on both databases: the inbox dedupes, records merge, a changed record is synced again."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from lmsbridge.domain import Rank
from lmsbridge.domain.sync import SyncStep
from lmsbridge.ports import Lease
from lmsbridge.storage import PENDING, SYNCED, Repository
from tests.storage.conftest import ACCOUNTS, T0, event


async def test_duplicate_message_id_has_no_second_effect(repo: Repository) -> None:
    """The same message id stored twice gives one record, and the second call reports a duplicate."""
    first = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    again = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    assert first[0].duplicate is False
    assert again[0].duplicate is True
    assert again[0].record_ids == first[0].record_ids
    assert await repo.stats.status_counts() == {"acc-1": {PENDING: 1}, "acc-2": {PENDING: 1}}
    assert await repo.stats.inbox_count() == 1


async def test_completion_after_sync_reopens_only_the_completion(repo: Repository) -> None:
    """A synced record that later completes goes back to pending with its assignment kept."""
    [created] = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    rid = created.record_ids[0]
    await repo.leases.mark_written(rid, "acc-1", SyncStep.CREATE_ASSIGNMENT, "lms-1")
    await repo.leases.set_status(rid, "acc-1", SYNCED)
    done = event("m2", "assignment.completed")
    await repo.intake.ingest([(done, done.people)], ACCOUNTS)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert (view.status, view.state.rank, view.synced.assignment_created, view.synced.completion_created) == (
        PENDING,
        Rank.COMPLETED,
        True,
        False,
    )


async def test_concurrent_ingest_of_one_record_merges(repo: Repository) -> None:
    """Created and completed for the same person stored concurrently end as one completed record."""
    created, done = event("m1"), event("m2", "assignment.completed")
    results = await asyncio.gather(
        repo.intake.ingest([(created, created.people)], ACCOUNTS), repo.intake.ingest([(done, done.people)], ACCOUNTS)
    )
    ids = {r[0].record_ids for r in results}
    assert len(ids) == 1
    view = await repo.leases.load_sync(next(iter(ids))[0], "acc-2")
    assert view is not None
    assert view.state.rank is Rank.COMPLETED


async def test_prune_forgets_only_message_ids_processed_before_the_cutoff(repo: Repository) -> None:
    """Pruning the inbox removes the ids processed before the cutoff and keeps the later ones."""
    await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    assert await repo.intake.prune_inbox(T0) == 0  # processed now, long after T0
    assert await repo.stats.inbox_count() == 1
    assert await repo.intake.prune_inbox(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await repo.stats.inbox_count() == 0


async def test_prune_forgets_a_long_backlog_a_batch_at_a_time(repo: Repository) -> None:
    """Twelve ids to forget at five a transaction: all twelve go (three batches), and none of the
    ids processed after the cutoff."""
    for i in range(12):
        await repo.intake.ingest([(event(f"old-{i}"), event(f"old-{i}").people)], ACCOUNTS)
    cutoff = datetime.now(UTC) + timedelta(milliseconds=1)
    await asyncio.sleep(0.01)
    await repo.intake.ingest([(event("new"), event("new").people)], ACCOUNTS)
    assert await repo.intake.prune_inbox(cutoff, batch=5) == 12
    assert await repo.stats.inbox_count() == 1


async def test_a_lease_given_to_ingest_leases_only_the_rows_of_records_it_creates(repo: Repository) -> None:
    """With a lease, a new record's sync rows are stored leased to it and returned as the claim would read
    them; a later event on the same record, and a duplicate, lease nothing (their syncs claim as before)."""
    await repo.content.mark_content("acc-2", [("exec:scenario:discovery-call", "Discovery Call", T0)])
    first = event("lease-1")
    [created] = await repo.intake.ingest([(first, first.people)], ACCOUNTS, lease=Lease("w1", 1060.0))
    assert {v.account for v in created.claimed} == {"acc-1", "acc-2"}
    for view in created.claimed:
        assert view.leased
        again = await repo.leases.load_sync(view.record_id, view.account)
        assert again is not None
        assert dataclasses.replace(again, leased=True) == view  # what a claim would have read
        assert not (await repo.leases.claim(view.record_id, view.account, "w2", 1000.0, 30)).leased  # type: ignore[union-attr]
    done = event("lease-2", "assignment.completed")
    [later] = await repo.intake.ingest([(done, done.people)], ACCOUNTS, lease=Lease("w3", 1060.0))
    [duplicate] = await repo.intake.ingest([(first, first.people)], ACCOUNTS, lease=Lease("w4", 1060.0))
    assert later.record_ids == created.record_ids
    assert (later.claimed, duplicate.claimed, duplicate.duplicate) == ((), (), True)
