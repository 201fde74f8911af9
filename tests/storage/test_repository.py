"""The repository on both databases: inbox dedupe, merged records, leases, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress, Rank
from lmsbridge.domain.sync import SyncStep
from lmsbridge.storage import DEAD, PENDING, SYNCED, Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import metadata

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
ACCOUNTS = {"acme": ["acc-1", "acc-2"]}


@pytest.fixture(params=["sqlite", "postgres"])
async def repo(request: pytest.FixtureRequest) -> AsyncIterator[Repository]:
    """A migrated repository on a fresh SQLite file or a fresh PostgreSQL database."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    repository = Repository(create_engine(url))
    await upgrade(repository.engine)
    yield repository
    await repository.close()


def event(
    message_id: str, kind: str = "assignment.created", *, emails: tuple[str, ...] = ("jane@acme.example",)
) -> AssignmentEvent:
    return AssignmentEvent(
        message_id=message_id,
        source="acme",
        platform="exec",
        type=kind,
        occurred_at=T0 + timedelta(days=2),
        received_at=T0,
        correlation_id="corr",
        assignment_id="asg-1",
        learning_object=LearningObject(external_reference="exec:scenario:discovery-call", title="Discovery Call"),
        assigned_at=T0,
        due_date=T0 + timedelta(days=14),
        people=tuple(PersonProgress(email=e, passed=True if kind.endswith("completed") else None) for e in emails),
    )


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


async def test_lease_excludes_a_second_owner_until_it_expires(repo: Repository) -> None:
    """Only one worker holds a record's sync lease at a time; an expired lease can be taken."""
    [created] = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    rid = created.record_ids[0]

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
    [created] = await repo.intake.ingest([(event("m1"), event("m1").people)], ACCOUNTS)
    rid = created.record_ids[0]
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


async def test_concurrent_writes_share_one_transaction(repo: Repository) -> None:
    """Writes issued concurrently are committed together (group commit), each with its own result."""
    items = [event(f"m{i}", emails=(f"p{i}@acme.example",)) for i in range(20)]
    before = repo.transactions
    results = await asyncio.gather(*(repo.intake.ingest([(e, e.people)], ACCOUNTS) for e in items))
    assert len({r[0].record_ids for r in results}) == 20
    assert repo.transactions - before < 20
    assert (await repo.stats.status_counts())["acc-1"] == {PENDING: 20}


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


async def test_directory_and_account_bookkeeping(repo: Repository) -> None:
    """User ids are found by lower-cased e-mail; pausing an account does not lose its other fields."""
    await repo.directory.save_users("acc-1", [("Jane@Acme.example", "u-1")])
    assert await repo.directory.user_id("acc-1", "jane@acme.example") == "u-1"
    await repo.accounts.update_account("acc-1", email_filter="ignored")
    await repo.accounts.update_account("acc-1", paused=True, reason="412 disabled", status=412)
    state = await repo.accounts.account("acc-1")
    assert (state.paused, state.email_filter) == (True, "ignored")


async def test_migrations_match_the_tables(repo: Repository) -> None:
    """The schema the migrations build is exactly the schema the code declares."""

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with repo.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await upgrade(repo.engine)  # a second upgrade is a no-op
