"""Two workers' group commits that deadlock on PostgreSQL: the loser's batch runs again, both commit.

Found by the scale-out test: three workers on one PostgreSQL database made PostgreSQL break
deadlocks between their batches, and every write of the losing batch went back to RabbitMQ
as a failure, dozens of times a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from lmsbridge.storage.database import open_database
from lmsbridge.storage.group_commit import GroupCommit


def lock_then_sleep(first: int, second: int) -> Callable[[Connection], int]:
    """A write that updates row ``first``, waits, then row ``second`` (opposite orders deadlock)."""

    def work(conn: Connection) -> int:
        conn.execute(sa.text("UPDATE pairs SET n = n + 1 WHERE id = :id"), {"id": first})
        conn.execute(sa.text("SELECT pg_sleep(0.3)"))
        conn.execute(sa.text("UPDATE pairs SET n = n + 1 WHERE id = :id"), {"id": second})
        return first

    return work


@pytest.mark.postgres
async def test_a_batch_that_loses_a_deadlock_is_run_again(pg_url: str) -> None:
    """Two group commits on separate connections lock two rows in opposite orders: PostgreSQL kills one
    transaction, which is run again, so both callers get their result and both rows count two updates each."""
    setup = create_async_engine(pg_url)
    async with setup.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE pairs (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(sa.text("INSERT INTO pairs VALUES (1, 0), (2, 0)"))
    engines = [create_async_engine(pg_url) for _ in range(2)]
    commits = [GroupCommit(open_database(engine)) for engine in engines]
    try:
        results = await asyncio.gather(
            commits[0].run(lock_then_sleep(1, 2)),
            commits[1].run(lock_then_sleep(2, 1)),
        )
        async with setup.connect() as conn:
            counts: dict[int, int] = {int(i): int(n) for i, n in await conn.execute(sa.text("SELECT id, n FROM pairs"))}
    finally:
        for commit in commits:
            await commit.close()
        for engine in [*engines, setup]:
            await engine.dispose()
    assert sorted(results) == [1, 2]
    assert counts == {1: 2, 2: 2}
    assert sum(c.conflicts for c in commits) == 1
