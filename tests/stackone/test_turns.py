"""The budget's queue: live requests before background ones, which are slowed, never starved."""

from __future__ import annotations

import asyncio

from lmsbridge.lanes import in_background, lane
from lmsbridge.stackone.ratelimit import RateLimiter
from lmsbridge.stackone.turns import LIVE_RUN, Turns


async def test_a_live_waiter_is_served_before_background_waiters_that_came_first() -> None:
    """Three background requests wait, then a live one joins: the live one is served first, then
    the background ones in their order; ``ahead_of`` counts what each lane waits behind."""
    turns = Turns()
    background = [turns.join("acc", background=True) for _ in range(3)]
    live = turns.join("acc")
    assert turns.ahead_of(background=False) == 1
    assert turns.ahead_of(background=True) == 4
    assert turns.serve_next() is True
    assert live.done()
    assert not any(f.done() for f in background)
    for future in background:
        assert turns.serve_next() is True
        assert future.done()
    assert turns.serve_next() is None
    assert turns.waiting == 0


async def test_background_gets_one_grant_after_a_run_of_live_ones() -> None:
    """With both lanes always waiting, one grant in ``LIVE_RUN + 1`` goes to the background lane."""
    turns = Turns()
    background = [turns.join("acc", background=True) for _ in range(3)]
    for _ in range(LIVE_RUN):
        turns.join("acc")
        assert turns.serve_next() is True
    assert not any(f.done() for f in background)
    turns.join("acc")
    assert turns.serve_next() is True
    assert background[0].done()  # the eighth grant
    assert turns.serve_next() is True  # then live again
    assert not background[1].done()


async def test_a_cancelled_background_waiter_is_skipped_and_uncounted() -> None:
    """A background waiter that leaves is no longer counted, nor served."""
    turns = Turns()
    gone = turns.join("acc", background=True)
    kept = turns.join("acc", background=True)
    turns.leave(gone)
    assert turns.waiting == 1
    assert turns.ahead_of(background=False) == 0
    assert turns.serve_next() is True
    assert kept.done()
    assert gone.cancelled()
    assert turns.serve_next() is None


async def test_the_rate_limiter_serves_a_live_request_before_waiting_background_ones() -> None:
    """An empty bucket (1 token a second at 60/min): background acquires wait, a live one asked later
    gets the next token; the lane is read from the running task's context."""
    limiter = RateLimiter(60, burst=1)
    await limiter.acquire("acc")  # the bucket is empty now
    order: list[str] = []

    async def ask(name: str, background: bool) -> None:
        with lane(background):
            assert in_background() is background
            await limiter.acquire("acc")
        order.append(name)

    waiting = [asyncio.create_task(ask(f"bg{i}", True)) for i in range(2)]
    await asyncio.sleep(0.05)
    live = asyncio.create_task(ask("live", False))
    await asyncio.wait_for(live, 2.0)
    assert order == ["live"]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert in_background() is False
