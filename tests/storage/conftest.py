"""The storage tests' repository (both databases), the event they store, and a bare SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.database import Database, open_database
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


@dataclass
class Store:
    """A store on a fresh SQLite file with table ``t``, and another process's connection to the same file."""

    db: Database
    other: sqlite3.Connection
    path: str

    async def rows(self) -> list[int]:
        found = await self.db.read(lambda conn: conn.execute(sa.text("SELECT n FROM t ORDER BY n")).scalars().all())
        return list(found)


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    """The store the SQLite lock and write tests use (table ``t (n int PRIMARY KEY)``)."""
    engine = create_engine(sqlite_url)
    db = open_database(engine)
    await db.write([lambda conn: conn.execute(sa.text("CREATE TABLE t (n int PRIMARY KEY)"))])
    path = engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    yield Store(db, other, path)
    other.close()
    await db.close()
    await engine.dispose()


def insert(n: int) -> Callable[[Connection], object]:
    """A write of one row holding ``n``."""
    return lambda conn: conn.execute(sa.text("INSERT INTO t VALUES (:n)"), {"n": n})
