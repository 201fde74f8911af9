"""Poison data (issue 13 item 1, the worker's half): a statement refused for its own data fails alone and for good.

The cases passed the receiver's validation of the time the issue was filed, but not every
database can hold them: a NUL character (PostgreSQL text), a learning-object reference
longer than its column (512), a 320-character e-mail whose ``lower()`` grows past 320
(U+0130), a due date that is past year 9999 once moved to UTC. The models now refuse those
(the receiver answers 422), so the events here are built without validation; the two
``platform`` cases still decode, as a hand-published or replayed message may carry them.
Whatever the database, such an event must never be retried as an infrastructure fault
(without using an attempt, so forever), and an event that shares its group-commit
transaction must still be stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, select

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.errors import DeadLetter, InfrastructureFault
from lmsbridge.storage import UNSTORABLE, Repository, create_engine
from lmsbridge.storage.database import is_data_error, open_database
from lmsbridge.storage.group_commit import GroupCommit
from lmsbridge.storage.tables import accounts

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
ACCOUNTS = {"acme-sales": ["acc-main"]}
# 60 x U+0130 (lower() is two characters each) + "@" + a domain: 320 characters, 380 lower-cased.
GROWING_EMAIL = "\u0130" * 60 + "@" + "a" * 255 + ".com"
POISON: dict[str, dict[str, Any]] = {
    "nul_in_title": {"title": "Discovery\x00Call"},
    "nul_in_message_id": {"message_id": "poison-\x00-id"},
    "reference_too_long": {"ref": "exec:scenario:" + "x" * 600},
    "email_grows_when_lowered": {"email": GROWING_EMAIL},
    "due_date_past_9999_in_utc": {"due": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12)))},
    # These two pass the models' validation (the platform is set by the receiver, not the body).
    "nul_in_platform": {"platform": "exec\x00"},
    "platform_too_long": {"platform": "exec-" + "x" * 40},
}
DECODABLE = ("nul_in_platform", "platform_too_long")


def poison_event(case: str, *, source: str = "acme-sales") -> AssignmentEvent:
    """An Exec assignment carrying the poison of ``case`` (see :data:`POISON`)."""
    values = {"message_id": f"poison-{case}", "email": "poison@acme.example", **POISON[case]}
    return make_event(source=source, **values)


def make_event(
    *,
    message_id: str,
    source: str = "acme-sales",
    title: str = "Discovery Call",
    platform: str = "exec",
    ref: str = "exec:scenario:discovery-call",
    email: str = "jane@acme.example",
    due: datetime | None = None,
) -> AssignmentEvent:
    """A canonical assignment.created event for one person, built WITHOUT validation.

    The worker's storage must hold its own against whatever reaches it, however strict the
    receiver and the models become, so these events skip the models' checks.
    """
    assert len(email) <= 320
    return AssignmentEvent.model_construct(
        message_id=message_id,
        source=source,
        platform=platform,
        type="assignment.created",
        occurred_at=T0,
        received_at=T0,
        correlation_id=f"corr-{message_id}",
        assignment_id=f"asg-{message_id}"[:64],
        learning_object=LearningObject.model_construct(external_reference=ref, title=title),
        assigned_at=T0,
        due_date=due or T0 + timedelta(days=14),
        people=(PersonProgress.model_construct(email=email),),
        needs_expansion=False,
    )


async def test_group_commit_runs_a_write_refused_for_its_data_alone(repo: Repository) -> None:
    """Three writes share one batch; one breaks a NOT NULL constraint: it alone fails, with its own
    IntegrityError, and the other two are committed (before the fix all three failed with it)."""
    group = GroupCommit(open_database(repo.engine))

    def add(name: str, paused: bool | None) -> Any:
        def work(conn: Connection) -> str:
            conn.execute(accounts.insert().values(account=name, paused=paused))
            return name

        return work

    try:
        results = await asyncio.gather(
            group.run(add("first", False)),
            group.run(add("broken", None)),
            group.run(add("last", True)),
            return_exceptions=True,
        )
        stored = await repo._sql.read(lambda conn: sorted(r[0] for r in conn.execute(select(accounts.c.account))))
    finally:
        await group.close()
    assert (results[0], results[2]) == ("first", "last"), results
    assert isinstance(results[1], Exception), results[1]
    assert is_data_error(results[1]), results[1]
    assert stored == ["first", "last"]


@pytest.mark.parametrize("case", list(POISON))
async def test_a_poison_event_fails_alone_and_for_good(repo: Repository, case: str) -> None:
    """Ingested in the same transaction as a valid event: the valid one is stored whatever the database;
    the poison is either stored too (SQLite holds NULs and long strings) or refused as a dead letter
    with reason ``unstorable`` naming the database's complaint but not the value (always on
    PostgreSQL) — never an InfrastructureFault, which is requeued forever."""
    good = make_event(message_id="good-1", email="omar@acme.example")
    bad = poison_event(case)
    outcome = await asyncio.gather(
        repo.intake.ingest([(good, good.people)], ACCOUNTS),
        repo.intake.ingest([(bad, bad.people)], ACCOUNTS),
        return_exceptions=True,
    )
    assert not isinstance(outcome[0], BaseException), outcome[0]
    refused = outcome[1]
    if isinstance(refused, BaseException):
        assert isinstance(refused, DeadLetter), repr(refused)
        assert refused.reason == UNSTORABLE, repr(refused)
        assert "\x00" not in str(refused)
        assert "x" * 100 not in str(refused)
        assert GROWING_EMAIL not in str(refused)
        assert await repo.stats.status_counts() == {"acc-main": {"pending": 1}}
    else:
        assert repo.engine.dialect.name == "sqlite", "PostgreSQL cannot hold this: it must be refused"
        assert await repo.stats.status_counts() == {"acc-main": {"pending": 2}}


async def test_error_text_with_a_nul_is_stored_not_refused(repo: Repository) -> None:
    """Bookkeeping writes carry text from outside (StackOne's error messages): a NUL in it is replaced,
    so PostgreSQL stores the failure instead of refusing it (which would now be a dead letter
    escaping the consumer's bookkeeping, and before was an InfrastructureFault silently dropped)."""
    good = make_event(message_id="good-1")
    [stored] = await repo.intake.ingest([(good, good.people)], ACCOUNTS)
    rid = stored.record_ids[0]

    assert await repo.leases.note_failure(rid, "acc-main", "StackOne said: bad\x00title") == 1
    await repo.leases.set_status(rid, "acc-main", "dead", reason="stackone_400", error="HTTP 400: bad\x00title")
    await repo.accounts.update_account("acc-main", paused=True, reason="HTTP 403: no\x00access", status=403)

    assert await repo.stats.status_counts() == {"acc-main": {"dead": 1}}
    assert (await repo.accounts.account("acc-main")).reason == "HTTP 403: no\ufffdaccess"


@pytest.mark.parametrize(
    "url",
    ["postgresql+asyncpg://postgres@127.0.0.1:1/test", "sqlite+aiosqlite:////nonexistent-lmsbridge-dir/x.db"],
    ids=["postgres_refused", "sqlite_unopenable"],
)
async def test_a_database_that_fails_is_still_an_infrastructure_fault(url: str) -> None:
    """A database that cannot be reached or opened is our fault, not the event's: InfrastructureFault
    (requeued without using an attempt), never the dead letter reserved for data it refuses."""
    repository = Repository(create_engine(url))
    event = make_event(message_id="m1")
    try:
        with pytest.raises(InfrastructureFault):
            await repository.intake.ingest([(event, event.people)], ACCOUNTS)
    finally:
        await repository.close()
