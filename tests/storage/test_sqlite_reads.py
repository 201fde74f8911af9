"""SQLite's lock: reads take none, and a write waiting for it gets it as soon as it is free.

Found by the reconciliation benchmark: every transaction began ``BEGIN IMMEDIATE``, reads
included, so a reconcile pass reading its pages held SQLite's write lock while it read, and the
worker's writes (another process) slept in SQLite's busy handler: a dry-run pass, which writes
nothing, raised live syncs' p99 from 27 to 144 ms.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from lmsbridge.storage.engine import begin_immediate
from tests.storage.conftest import Store, insert


async def test_a_read_neither_waits_for_a_writer_nor_holds_one_up(store: Store) -> None:
    """With another connection (as another process would) holding the write lock, a read through the
    store returns at once with the last committed rows; and while a read is open, another connection
    writes and commits at once (no ``database is locked`` wait)."""
    db, other = store.db, store.other
    await db.write([insert(1)])

    other.execute("BEGIN IMMEDIATE")  # the other process's writer, mid-transaction
    other.execute("INSERT INTO t VALUES (2)")
    started = time.perf_counter()
    rows = await asyncio.wait_for(db.read(lambda conn: conn.execute(sa.text("SELECT n FROM t")).scalars().all()), 2)
    assert rows == [1]  # the committed state, without waiting for the open write
    assert time.perf_counter() - started < 0.5
    other.execute("COMMIT")

    def read_while_other_writes(conn: Connection) -> tuple[list[int], float]:
        before = conn.execute(sa.text("SELECT n FROM t ORDER BY n")).scalars().all()
        began = time.perf_counter()
        other.execute("BEGIN IMMEDIATE")  # succeeds at once: the read holds no write lock
        other.execute("INSERT INTO t VALUES (3)")
        other.execute("COMMIT")
        return list(before), time.perf_counter() - began

    before, write_seconds = await db.read(read_while_other_writes)
    assert before == [1, 2]
    assert write_seconds < 0.5


@pytest.mark.usefixtures("steady_gc")  # milliseconds timed in this process: alone (serial), as such tests run
async def test_a_write_takes_the_lock_soon_after_another_connection_releases_it(store: Store) -> None:
    """A write that finds the lock held gets it within a few milliseconds of its release, every time:
    SQLite's own busy handler would sleep 1, 2, 5, 10, 15 ms between tries, so a lock held 20 ms was
    taken 33 ms after the write began (13 ms late); a lock never released fails the write with
    ``database is locked``, as SQLAlchemy reports it, once the wait is over. (Beside three other test
    processes on two cores, a clean clone's median once came 6.1 ms after the release.)"""
    db, other, path = store.db, store.other, store.path

    lags = []
    for n in range(5):
        other.execute("BEGIN IMMEDIATE")
        released: list[float] = []

        async def release_later(times: list[float]) -> None:
            await asyncio.sleep(0.02)
            other.execute("COMMIT")
            times.append(time.perf_counter())

        releasing = asyncio.create_task(release_later(released))
        await db.write([insert(n)])
        done = time.perf_counter()
        await releasing
        lags.append(done - released[0])
    assert sorted(lags)[2] < 0.006, lags  # the median write: within 6 ms of the release (busy handler: 13)
    rows = await db.read(lambda conn: conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one())
    assert rows == 5

    other.execute("BEGIN IMMEDIATE")
    dbapi = sqlite3.connect(path, isolation_level=None, timeout=0)
    started = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(dbapi, wait=0.05)
    assert 0.05 <= time.perf_counter() - started < 1.0
    dbapi.close()
    other.execute("ROLLBACK")
