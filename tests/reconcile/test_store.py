"""Reconciliation's storage on both databases: the reads a pass compares with, reopening, passes, the lease."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress, Rank
from lmsbridge.domain.sync import SyncStep
from lmsbridge.storage import PENDING, SYNCED, Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.reconcile import ReconcileStore

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
    the rows marked written, and reopens a written step only on a row at rest."""
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
    [row] = await store.written("acc")
    assert (row.record_id, row.email, row.assignment_created, row.completion_created) == (
        first,
        "a@x.example",
        True,
        False,
    )
    assert await store.known_pairs("acc") == {(e, REF) for e in ("a@x.example", "b@x.example", "c@x.example")}

    assert await store.reopen(first, "acc", assignment=True, completion=False, now=0.0)
    view = await repo.leases.load_sync(first, "acc")
    assert view is not None
    assert (view.status, view.synced.assignment_created) == (PENDING, False)
    assert not await store.reopen(first, "acc", assignment=True, completion=False, now=0.0)  # not at rest now


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
