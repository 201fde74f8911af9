"""Live work first: reconciliation's jobs wait for webhooks' jobs, run one at a time, and still progress."""

from __future__ import annotations

import asyncio

from lmsbridge.broker.priority import LiveFirst, is_background


def test_reconciliation_messages_are_background_work() -> None:
    """Only the ids reconciliation makes are background; webhooks' ids and sync tasks are live."""
    assert is_background("reconcile:3f2a")
    assert not is_background("msg_2Xb9")
    assert not is_background("sync:12:acc-1")
    assert not is_background(None)


async def test_a_background_job_waits_until_no_live_job_is_under_way() -> None:
    """While a live job runs, a reconcile job does not start; it starts as soon as the live one ends."""
    gate = LiveFirst(max_wait=5.0)
    order: list[str] = []
    live_may_end = asyncio.Event()

    async def live() -> None:
        async with gate.live():
            order.append("live started")
            await live_may_end.wait()
            order.append("live ended")

    async def background() -> None:
        async with gate.background():
            order.append("background started")

    live_task = asyncio.create_task(live())
    await asyncio.sleep(0)
    background_task = asyncio.create_task(background())
    await asyncio.sleep(0.05)
    assert order == ["live started"]
    live_may_end.set()
    await asyncio.gather(live_task, background_task)
    assert order == ["live started", "live ended", "background started"]
    assert gate.deferred == 1


async def test_background_jobs_run_one_at_a_time() -> None:
    """Three reconcile jobs with no live work: never two at once."""
    gate = LiveFirst()
    running = peak = 0

    async def background() -> None:
        nonlocal running, peak
        async with gate.background():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(background() for _ in range(3)))
    assert peak == 1


async def test_a_background_job_is_not_starved_by_endless_live_work() -> None:
    """With live work never ending, a reconcile job still runs after ``max_wait``."""
    gate = LiveFirst(max_wait=0.1)
    forever = asyncio.Event()

    async def live() -> None:
        async with gate.live():
            await forever.wait()

    live_task = asyncio.create_task(live())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with gate.background():
        waited = loop.time() - started
    live_task.cancel()
    await asyncio.gather(live_task, return_exceptions=True)
    assert 0.09 <= waited < 1.0
