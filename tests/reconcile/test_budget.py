"""Reconciliation's StackOne sub-budget: at most its share of the key's rate, live traffic the rest."""

from __future__ import annotations

import asyncio
import time

import pytest

from lmsbridge.stackone.ratelimit import RateLimiter, SubBudget

pytestmark = pytest.mark.usefixtures("steady_gc")  # times sub-second behaviour in this process


async def test_a_sub_budget_takes_at_most_its_share_while_live_traffic_takes_the_rest() -> None:
    """Parent 100/s, sub-budget 0.2: with both sides asking as fast as they can for 1.5 s, live
    requests go first, yet reconciliation is not starved (one grant in eight while it waits) and
    never gets more than its own rate allows."""
    parent = RateLimiter(6000, burst=1)
    sub = SubBudget(parent, 0.2)
    assert sub.snapshot()["per_minute"] == 1200
    counts = {"live": 0, "reconcile": 0}
    stop = time.monotonic() + 1.5

    async def ask(limiter: RateLimiter, side: str) -> None:
        while time.monotonic() < stop:
            await limiter.acquire("acc")
            if time.monotonic() < stop:  # granted within the window
                counts[side] += 1

    await asyncio.gather(*(ask(parent, "live") for _ in range(4)), *(ask(sub, "reconcile") for _ in range(4)))
    total = counts["live"] + counts["reconcile"]
    assert counts["reconcile"] <= 20 * 1.5 + 2  # its own rate (20/s) and its burst (2 tokens)
    assert counts["reconcile"] >= 10
    assert counts["live"] >= 0.7 * total


async def test_a_pause_of_the_sub_budget_pauses_the_key() -> None:
    """A 429 seen by reconciliation pauses the parent too: the API key is what StackOne limits."""
    parent = RateLimiter(6000, burst=1)
    sub = SubBudget(parent, 0.2)
    sub.pause(5.0)
    assert parent.snapshot()["paused_for"] > 4.0
    assert sub.snapshot()["paused_for"] > 4.0
