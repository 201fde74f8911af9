"""Reconciliation's storage on both databases: the reads a pass compares with, reopening, passes, the lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from lmsbridge.domain import AssignmentEvent, Completion, LearningObject, PersonProgress, Rank
from lmsbridge.domain.sync import REOPENED, SyncStep
from lmsbridge.storage import PENDING, SYNCED, Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.reconcile import ReconcileStore
from lmsbridge.storage.tables import records, sync_state

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
REF = "limeplate:topic:xss"


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Repository, ReconcileStore]]:
    """A migrated repository and a reconcile store on the same fresh SQLite file or PostgreSQL database."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    repo = Repository(create_engine(url))
    await upgrade(repo.engine)
    engine = create_engine(url)
    store = ReconcileStore(engine)
    yield repo, store
    await store.close()
    await engine.dispose()
    await repo.close()


def team(people: dict[str, float]) -> AssignmentEvent:
    return AssignmentEvent(
        message_id="m-team",
        source="sec",
        platform="limeplate",
        type="assignment.created",
        occurred_at=T0,
        received_at=T0,
        correlation_id="c",
        assignment_id="asg-team",
        learning_object=LearningObject(external_reference=REF, title="XSS"),
        people=tuple(PersonProgress(email=e, progress=p) for e, p in people.items()),
    )


async def test_states_counts_written_rows_and_reopening(stores: tuple[Repository, ReconcileStore]) -> None:
    """A pass reads the records of the people it was given, per-assignment (total, completed) counts,
    every sync row of an account in record order with the writes recorded as done (streamed), when
    the first write was recorded, and reopens a written step only on a row at rest."""
    repo, store = stores
    event = team({"a@x.example": 100, "b@x.example": 10, "c@x.example": 0})
    [stored] = await repo.intake.ingest([(event, event.people)], {"sec": ["acc"]})
    states = await store.states("sec", [(REF, "a@x.example"), (REF, "b@x.example"), (REF, "nobody@x.example")])
    assert sorted(states) == [(REF, "a@x.example"), (REF, "b@x.example")]
    assert states[(REF, "a@x.example")].rank is Rank.COMPLETED
    assert await store.held("sec", ["asg-team", "asg-other"]) == {"asg-team": (3, 1)}

    first = stored.record_ids[0]
    await repo.leases.mark_written(first, "acc", SyncStep.CREATE_ASSIGNMENT, "asg-1", last=False)
    await repo.leases.set_status(first, "acc", SYNCED)
    held: list[tuple[int, str, str, bool, bool, Completion | None]] = []
    await store.each_sync_row("acc", lambda *row: held.append(row))
    assert held == [
        (record_id, email, REF, record_id == first, False, None)
        for record_id, email in zip(stored.record_ids, ("a@x.example", "b@x.example", "c@x.example"), strict=True)
    ]
    first_written = await store.first_written_at("acc")
    assert first_written is not None
    assert first_written.tzinfo is not None
    assert await store.first_written_at("elsewhere") is None

    assert await store.reopen(first, "acc", assignment=True, completion=False, now=0.0)
    view = await repo.leases.load_sync(first, "acc")
    assert view is not None
    assert (view.status, view.synced.assignment_created) == (PENDING, False)
    assert not await store.reopen(first, "acc", assignment=True, completion=False, now=0.0)  # not at rest now


async def test_the_first_write_of_an_account_never_moves_later(stores: tuple[Repository, ReconcileStore]) -> None:
    """The pass's window starts from an account's first recorded write: a completion written later,
    a sync ending synced again, and a write reopened and recorded again leave it where it was (it
    was ``min(synced_at)``, which every sync ending synced moved on, and was None until one did)."""
    repo, store = stores
    event = team({"a@x.example": 100, "b@x.example": 10})
    [stored] = await repo.intake.ingest([(event, event.people)], {"sec": ["acc"]})
    first, second = stored.record_ids
    await repo.leases.mark_written(first, "acc", SyncStep.CREATE_ASSIGNMENT, "asg-1", last=False)
    written = await store.first_written_at("acc")
    assert written is not None
    assert written.tzinfo is not None
    assert written <= datetime.now(UTC)

    done = Completion(True, 100.0, T0)
    for rid in (first, second):
        await repo.leases.mark_written(rid, "acc", SyncStep.CREATE_ASSIGNMENT, f"asg-{rid}", last=False)
        await repo.leases.mark_written(rid, "acc", SyncStep.CREATE_COMPLETION, f"cmp-{rid}", completion=done)
        await repo.leases.set_status(rid, "acc", SYNCED)
    assert await store.reopen(first, "acc", assignment=True, completion=True, now=0.0)
    await repo.leases.mark_written(first, "acc", SyncStep.CREATE_ASSIGNMENT, "asg-again", last=False)
    await repo.leases.set_status(first, "acc", SYNCED)
    assert await store.first_written_at("acc") == written


async def test_a_reopened_row_lists_before_each_create_until_its_last_write(
    stores: tuple[Repository, ReconcileStore],
) -> None:
    """A row the LMS pass reopens carries the REOPENED intent (each create lists first): a step's own
    intent and a refusal keep it, as does recording the assignment (the completion is still to come),
    so a crash between the two still lists before the completion; the plan's last write clears it."""
    repo, store = stores
    event = team({"a@x.example": 100})
    [stored] = await repo.intake.ingest([(event, event.people)], {"sec": ["acc"]})
    [rid] = stored.record_ids
    done = Completion(True, 100.0, T0)
    await repo.leases.mark_written(rid, "acc", SyncStep.CREATE_ASSIGNMENT, "asg-1")
    await repo.leases.mark_written(rid, "acc", SyncStep.CREATE_COMPLETION, "cmp-1", completion=done)
    await repo.leases.set_status(rid, "acc", SYNCED)
    assert await store.reopen(rid, "acc", assignment=True, completion=True, now=0.0)

    async def intent() -> str | None:
        view = await repo.leases.load_sync(rid, "acc")
        assert view is not None
        return view.uncertain_step

    assert await intent() == REOPENED
    view = await repo.leases.claim(rid, "acc", "w1", 1000.0, 30)
    assert view is not None
    assert await repo.leases.intend(rid, "acc", "w1", SyncStep.CREATE_ASSIGNMENT, 1001.0, 30)
    assert await intent() == REOPENED
    assert await repo.leases.intend(rid, "acc", "w1", None, 1001.0, 30)  # refused
    assert await intent() == REOPENED
    await repo.leases.mark_written(rid, "acc", SyncStep.CREATE_ASSIGNMENT, "asg-2", version=view.version)
    assert await intent() == REOPENED
    await repo.leases.mark_written(
        rid, "acc", SyncStep.CREATE_COMPLETION, "cmp-2", last=True, completion=done, version=view.version
    )
    assert await intent() is None


async def test_passes_seen_aggregates_and_the_lease(stores: tuple[Repository, ReconcileStore]) -> None:
    """The last pass per source is kept (a stopped one keeps the last success), aggregates are
    upserted, and the lease goes to one owner at a time."""
    _, store = stores
    await store.record_pass("exec", started_at=10.0, duration=2.0, outcome="finished", findings={"a": 1}, error=None)
    await store.record_pass("exec", started_at=20.0, duration=1.0, outcome="stopped", findings={}, error="down")
    [last] = await store.passes()
    assert (last.started_at, last.outcome, last.error, last.last_success_at) == (20.0, "stopped", "down", 12.0)
    await store.remember_seen("sec", "asg", 3, 1, 1.0)
    await store.remember_seen("sec", "asg", 4, 2, 2.0)
    assert await store.seen("sec") == {"asg": (4, 2)}
    assert await store.take_lease("periodic", "a", 100.0, 10.0)
    assert not await store.take_lease("periodic", "b", 101.0, 10.0)
    assert await store.take_lease("periodic", "b", 111.0, 10.0)


async def test_reads_for_a_whole_organisation_fit_the_databases_parameter_limits(
    stores: tuple[Repository, ReconcileStore],
) -> None:
    """A platform listing 40,000 assignments, and an organisation-wide assignment of 20,000 people
    (40,000 values as (object, person) pairs), are read in one call each: asyncpg refuses a
    statement with more than 32,767 values (SQLite builds may stop at 32,766), which failed the
    whole reconcile pass of such a source, every time."""
    repo, store = stores
    event = team({"a@x.example": 100, "b@x.example": 10})
    await repo.intake.ingest([(event, event.people)], {"sec": ["acc"]})
    ids = [f"asg-{i}" for i in range(40_000)] + ["asg-team"]
    assert await store.held("sec", ids) == {"asg-team": (2, 1)}
    keys = [(REF, f"p{i}@x.example") for i in range(20_000)] + [(REF, "b@x.example")]
    states = await store.states("sec", keys)
    assert list(states) == [(REF, "b@x.example")]
    assert states[(REF, "b@x.example")].progress == 10


async def test_an_accounts_sync_rows_stream_past_one_fetch_and_are_found_by_pair(
    stores: tuple[Repository, ReconcileStore],
) -> None:
    """12,345 sync rows on one account (more than two of PostgreSQL's cursor fetches) are each handed
    over once, in record order, with their writes and the completion written (None when a row from
    before 0002 does not say); another account's rows are not. Asked which of
    12,444 pairs (three ``IN`` lists) it holds, the store names exactly the account's."""
    repo, store = stores
    n = 12_345
    async with repo.engine.begin() as conn:
        await conn.execute(
            records.insert(),
            [
                {
                    "id": i,
                    "source": "sec",
                    "assignment_id": f"a{i}",
                    "person_key": f"p{i}@x.example",
                    "platform": "limeplate",
                    "learning_object_ref": REF,
                    "title": "XSS",
                    "rank": int(Rank.ASSIGNED),
                    "version": 1,
                    "received_at": T0,
                    "updated_at": T0,
                }
                for i in range(1, n + 1)
            ],
        )
        await conn.execute(
            sync_state.insert(),
            [
                {
                    "record_id": i,
                    "account": "acc" if i % 5 else "other",
                    "status": SYNCED,
                    "assignment_created": True,
                    "completion_created": i % 2 == 0,
                    "completion_passed": i % 4 == 0 if i % 6 else None,  # None: written before 0002
                    "completion_score": float(i % 100),
                    "completion_at": T0,
                    "attempts": 0,
                    "updated_at": T0,
                }
                for i in range(1, n + 1)
            ],
        )
    held: list[tuple[int, str, str, bool, bool, Completion | None]] = []
    await store.each_sync_row("acc", lambda *row: held.append(row))

    def written(i: int) -> Completion | None:
        return Completion(i % 4 == 0, float(i % 100), T0) if i % 2 == 0 and i % 6 else None

    assert held == [(i, f"p{i}@x.example", REF, True, i % 2 == 0, written(i)) for i in range(1, n + 1) if i % 5]
    asked = [(f"p{i}@x.example", REF) for i in range(1, n + 100)] + [("p1@x.example", "limeplate:topic:other")]
    assert await store.held_pairs("acc", asked) == {(f"p{i}@x.example", REF) for i in range(1, n + 1) if i % 5}
