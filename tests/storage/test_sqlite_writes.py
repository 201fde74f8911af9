"""SQLite writes: begun and committed on the helper thread, their statements run on the event loop.

What the split must not cost: the loop stays free while a write waits for another process's lock;
a batch that fails leaves nothing written and the connection usable; a write abandoned while it
waited for the lock (its caller cancelled) leaves no transaction open behind it.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from tests.storage.conftest import Store, insert


async def test_the_event_loop_runs_on_while_a_write_waits_for_another_processs_lock(store: Store) -> None:
    """Another connection holds the write lock for 0.3 s: the write waits for it off the loop (other
    tasks keep running every few milliseconds), then commits."""
    store.other.execute("BEGIN IMMEDIATE")
    writing = asyncio.create_task(store.db.write([insert(1)]))
    for _ in range(30):
        await asyncio.sleep(0.01)
    assert not writing.done()
    store.other.execute("COMMIT")
    await asyncio.wait_for(writing, 5)

    assert await store.rows() == [1]


async def test_a_failed_batch_writes_nothing_and_the_next_batch_commits(store: Store) -> None:
    """A batch whose second statement breaks the primary key is rolled back whole; the next one commits."""
    await store.db.write([insert(1)])
    with pytest.raises(sa.exc.IntegrityError):
        await store.db.write([insert(2), insert(1)])
    await store.db.write([insert(3)])

    assert await store.rows() == [1, 3]


async def test_a_write_cancelled_while_it_waits_for_the_lock_leaves_no_transaction_open(store: Store) -> None:
    """The caller gives up while the thread waits for the lock; once the lock is free the thread's
    transaction is rolled back: the abandoned row is never written, the next write commits, and
    another process can take the lock again."""
    store.other.execute("BEGIN IMMEDIATE")
    abandoned = asyncio.create_task(store.db.write([insert(1)]))
    await asyncio.sleep(0.1)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    store.other.execute("COMMIT")

    await asyncio.wait_for(store.db.write([insert(2)]), 5)
    assert await store.rows() == [2]
    store.other.execute("BEGIN IMMEDIATE")  # would fail with "database is locked" if a transaction were left open
    store.other.execute("ROLLBACK")


async def test_writes_started_together_commit_one_after_the_other_at_once(store: Store) -> None:
    """Callers that write without a group commit (the shared budget's claims) may write at the same
    moment: each transaction is begun, run and committed in turn, none waits for the one connection."""
    await asyncio.wait_for(asyncio.gather(*(store.db.write([insert(n)]) for n in range(8))), 5)

    assert await store.rows() == list(range(8))
