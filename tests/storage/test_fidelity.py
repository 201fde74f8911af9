"""The repository keeps what happened: per-source message ids, instants, written completions, titles.

Each test runs on a fresh SQLite file and on a fresh PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from lmsbridge.domain import AssignmentEvent, Completion, LearningObject, PersonProgress
from lmsbridge.domain.sync import SyncStep
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import inbox, records, sync_state

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
ACCOUNTS = {"acme": ["acc-1"], "globex": ["acc-1"]}
PDT, IST, EDT = timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-4))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh SQLite file or a fresh PostgreSQL database."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
async def repo(db_url: str) -> AsyncIterator[Repository]:
    """A migrated repository."""
    repository = Repository(create_engine(db_url))
    await upgrade(repository.engine)
    yield repository
    await repository.close()


def event(
    message_id: str,
    source: str = "acme",
    *,
    email: str = "jane@acme.example",
    kind: str = "assignment.created",
    title: str = "Phishing",
    occurred_at: datetime = T0,
    **times: datetime,
) -> AssignmentEvent:
    person: dict[str, object] = {"email": email}
    if "completed_at" in times:
        person.update(completed_at=times.pop("completed_at"), passed=True, score=90.0)
    return AssignmentEvent(
        message_id=message_id,
        source=source,
        platform="exec",
        type=kind,
        occurred_at=occurred_at,
        received_at=T0,
        correlation_id="corr",
        assignment_id="asg-1",
        learning_object=LearningObject(external_reference="exec:scenario:phishing", title=title),
        people=(PersonProgress(**person),),
        **times,
    )


async def test_same_message_id_from_two_sources_is_two_events(repo: Repository) -> None:
    """Message ids are per source: the same id from another source is stored, from the same one is a duplicate."""
    [a] = await repo.intake.ingest([(e := event("42", "acme"), e.people)], ACCOUNTS)
    [b] = await repo.intake.ingest([(e := event("42", "globex", email="omar@globex.example"), e.people)], ACCOUNTS)
    [again] = await repo.intake.ingest([(e := event("42", "globex", email="omar@globex.example"), e.people)], ACCOUNTS)
    assert (a.duplicate, b.duplicate, again.duplicate) == (False, False, True)
    assert a.record_ids != b.record_ids
    assert again.record_ids == b.record_ids
    assert await repo.stats.inbox_count() == 2


async def test_times_keep_their_instant(repo: Repository) -> None:
    """Times sent with -07:00, +05:30 and -04:00 come back as the same instants, in UTC."""
    due, assigned = datetime(2026, 6, 12, 8, tzinfo=PDT), datetime(2026, 6, 1, 9, tzinfo=IST)
    done = datetime(2026, 6, 4, 10, 18, 42, tzinfo=EDT)
    stored = event("m1", due_date=due, assigned_at=assigned)
    completed = event("m2", kind="assignment.completed", completed_at=done)
    first, _ = await repo.intake.ingest([(stored, stored.people), (completed, completed.people)], ACCOUNTS)
    view = await repo.leases.load_sync(first.record_ids[0], "acc-1")
    assert view is not None
    assert (view.state.due_date, view.state.assigned_at, view.state.completed_at) == (due, assigned, done)
    assert view.state.due_date is not None
    assert view.state.due_date.utcoffset() == timedelta(0)
    assert view.state.due_date.hour == 15  # 08:00-07:00 is 15:00 UTC, not 08:00 UTC


async def test_a_retake_records_what_was_written_and_what_it_replaced(repo: Repository) -> None:
    """A written completion is remembered with its result, score and time; a better one marks the first superseded."""
    [created] = await repo.intake.ingest([(e := event("m1"), e.people)], ACCOUNTS)
    rid = created.record_ids[0]
    fail = Completion(False, 40.0, T0)
    await repo.leases.mark_written(rid, "acc-1", SyncStep.CREATE_COMPLETION, "cmp_fail", completion=fail)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert (view.synced.completion, view.synced.lms_completion_id, view.synced.superseded_completion_id) == (
        fail,
        "cmp_fail",
        None,
    )
    retake = Completion(True, 85.0, T0 + timedelta(days=3))
    await repo.leases.mark_written(rid, "acc-1", SyncStep.CREATE_COMPLETION, "cmp_pass", completion=retake)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert (view.synced.completion, view.synced.lms_completion_id, view.synced.superseded_completion_id) == (
        retake,
        "cmp_pass",
        "cmp_fail",
    )
    await repo.leases.mark_written(rid, "acc-1", SyncStep.DELETE_SUPERSEDED, None)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert (view.synced.completion, view.synced.superseded_completion_id) == (retake, None)


async def test_a_new_cycles_completion_replaces_nothing_and_its_cycle_is_stored(repo: Repository) -> None:
    """A completion whose assignment was created after the written one was completed (the training
    assigned again) is recorded as written without marking the earlier one superseded: with
    deletion on, the earlier cycle's stays in the LMS. A completion event stores its cycle (its
    assignment's creation) with the record."""
    completed = event("m1", kind="assignment.completed", assigned_at=T0 - timedelta(days=30), completed_at=T0)
    [stored] = await repo.intake.ingest([(completed, completed.people)], ACCOUNTS)
    rid = stored.record_ids[0]
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert view.state.cycle_at == completed.assigned_at
    last_year = Completion(True, 85.0, T0)
    await repo.leases.mark_written(rid, "acc-1", SyncStep.CREATE_COMPLETION, "cmp_2025", completion=last_year)
    this_year = Completion(True, 85.0, T0 + timedelta(days=370), cycle_at=T0 + timedelta(days=365))
    await repo.leases.mark_written(rid, "acc-1", SyncStep.CREATE_COMPLETION, "cmp_2026", completion=this_year)
    view = await repo.leases.load_sync(rid, "acc-1")
    assert view is not None
    assert (view.synced.lms_completion_id, view.synced.superseded_completion_id) == ("cmp_2026", None)


async def test_the_newest_title_is_kept_per_account(repo: Repository) -> None:
    """Content remembers the newest (title, time): an older title is not missing, a newer other one is."""
    old, new = ("ref", "Phishing", T0), ("ref", "Phishing 2026", T0 + timedelta(hours=1))
    assert await repo.content.missing_content("acc-1", [old]) == [old]
    await repo.content.mark_content("acc-1", [new])
    assert await repo.content.missing_content("acc-1", [old]) == []
    await repo.content.mark_content("acc-1", [old])  # late: changes nothing
    later_same = ("ref", "Phishing 2026", T0 + timedelta(hours=2))
    assert await repo.content.missing_content("acc-1", [later_same]) == []  # same text: nothing to write
    newer = ("ref", "Phishing (new)", T0 + timedelta(hours=3))
    assert await repo.content.missing_content("acc-1", [newer]) == [newer]


async def test_the_migration_keeps_existing_rows(db_url: str) -> None:
    """Rows stored under revision 0001 survive 0002: the inbox id keeps its source, a written completion its result."""
    engine = create_engine(db_url)
    await upgrade(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(
            insert(records).values(
                id=1,
                source="acme",
                assignment_id="a",
                person_key="jane@acme.example",
                platform="exec",
                learning_object_ref="ref",
                title="T",
                rank=3,
                completed_at=T0,
                passed=False,
                score=40.0,
                version=1,
                received_at=T0,
                updated_at=T0,
            )
        )
        await conn.execute(
            insert(sync_state).values(
                record_id=1,
                account="acc-1",
                status="synced",
                assignment_created=True,
                completion_created=True,
                lms_completion_id="cmp_1",
                attempts=0,
                updated_at=T0,
            )
        )
        await conn.execute(
            insert(inbox).values(
                message_id="42",
                source="acme",
                event_type="assignment.completed",
                received_at=T0,
                processed_at=T0,
                record_ids=[1],
            )
        )
    await engine.dispose()
    repository = Repository(create_engine(db_url))
    try:
        await upgrade(repository.engine)
        view = await repository.leases.load_sync(1, "acc-1")
        assert view is not None
        assert view.synced.completion == Completion(False, 40.0, T0)
        [dup] = await repository.intake.ingest([(e := event("42", "acme"), e.people)], ACCOUNTS)
        assert dup.duplicate
        assert dup.record_ids == (1,)
        async with repository.engine.connect() as conn:
            assert (await conn.execute(select(inbox.c.source, inbox.c.message_id))).all() == [("acme", "42")]
    finally:
        await repository.close()
