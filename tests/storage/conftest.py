"""The storage tests' repository (both databases) and the event they store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade

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
    """An ``acme`` Exec event for ``emails`` on one learning object (passed when ``kind`` is a completion)."""
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
