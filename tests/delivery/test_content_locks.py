"""The per-learning-object locks (issue 13 item 6): kept only while held or awaited, never one per object for ever."""

from __future__ import annotations

import asyncio

from lmsbridge.locks import KeyedLocks
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, settled
from tests.pipeline.conftest import ACCOUNT, SettingsFactory


async def test_keyed_locks_exclude_per_key_and_empty_when_unused() -> None:
    """Two holders of one key run one after the other, another key runs beside them, and once all
    are done (one of them cancelled while waiting) no key is left in the map."""
    locks: KeyedLocks[str] = KeyedLocks()
    inside: list[str] = []
    overlap: list[bool] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            overlap.append(any(other.startswith(key) for other in inside))
            inside.append(f"{key}:{name}")
            await asyncio.sleep(0.02)
            inside.remove(f"{key}:{name}")

    first = asyncio.create_task(work("a", "1"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(work("a", "cancelled"))
    await asyncio.sleep(0)
    assert len(locks) == 1
    waiting.cancel()
    await asyncio.gather(first, work("a", "2"), work("b", "1"), return_exceptions=True)

    assert overlap == [False, False, False]
    assert waiting.cancelled()
    assert len(locks) == 0


async def test_syncing_many_learning_objects_leaves_no_lock_behind(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Twelve people, each assigned a learning object of their own: each object is upserted once,
    and once everything is synced the service holds no lock (before the fix: twelve, kept for ever)."""
    people = [f"learner{i:02d}@acme.example" for i in range(12)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)

    await asyncio.gather(*(assign(sender, email, scenario=f"scenario-{i}") for i, email in enumerate(people)))

    assert await settled(runtime) == {ACCOUNT: {"synced": 12}}
    assert len(calls(stackone, "POST", "/unified/lms/content/batch")) == 12
    assert runtime.service is not None
    assert len(runtime.service._content_locks) == 0
