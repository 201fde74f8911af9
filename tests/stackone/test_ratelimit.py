"""The per-key token bucket: its rate, its fairness across accounts, pauses, and cancel-safety."""

from __future__ import annotations

import asyncio
import time

import pytest

from lmsbridge.stackone import RateLimiter

pytestmark = pytest.mark.usefixtures("steady_gc")  # times sub-second behaviour in this process


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_burst_defaults_to_two_seconds_worth_and_at_least_one() -> None:
    """A new bucket holds per_minute/60*2 tokens, and never less than one."""
    assert RateLimiter(600).snapshot()["tokens"] == 20
    assert RateLimiter(6).snapshot()["tokens"] == 1
    assert RateLimiter(600, burst=5).snapshot()["tokens"] == 5
    assert RateLimiter(600).snapshot()["per_minute"] == 600


async def test_the_rate_is_respected_over_a_second() -> None:
    """600/min with its burst of 20 grants about 20 + 10 per second, never more, to 100 eager callers."""
    limiter = RateLimiter(600)
    granted: list[float] = []

    async def call(i: int) -> None:
        await limiter.acquire(f"acc-{i % 3}")
        granted.append(time.monotonic())

    started = time.monotonic()
    tasks = [asyncio.create_task(call(i)) for i in range(100)]
    await asyncio.sleep(1.0)
    within = sum(1 for t in granted if t - started <= 1.0)
    assert 25 <= within <= 31  # 20 at once, then one per 100 ms (never more; a busy loop may give fewer)
    snap = limiter.snapshot()
    assert snap["waiting"] + snap["granted_total"] == 100
    await _cancel_all(tasks)
    assert limiter.snapshot()["waiting"] == 0


async def test_one_accounts_backlog_cannot_starve_another() -> None:
    """With 1000 waiters on account A, a waiter on B queued after them is served within the next 2 grants."""
    limiter = RateLimiter(6000, burst=1)  # 100 per second, one at a time
    order: list[str] = []  # in grant order: each grant wakes its waiter in turn
    queued_after = -1.0

    async def call(account: str) -> None:
        await limiter.acquire(account)
        order.append(account)

    async def call_b() -> None:
        nonlocal queued_after
        queued_after = limiter.snapshot()["granted_total"]
        await call("B")

    a_tasks = [asyncio.create_task(call("A")) for _ in range(1000)]
    await _settle()
    assert limiter.snapshot()["waiting"] >= 990
    await asyncio.wait_for(asyncio.create_task(call_b()), timeout=2)
    assert order.index("B") - queued_after <= 1
    assert limiter.snapshot()["waiting"] >= 980  # A's backlog is still there: B did not wait it out
    await _cancel_all(a_tasks)


async def test_accounts_take_turns_and_each_is_served_in_arrival_order() -> None:
    """Grants go round-robin over accounts with waiters; within an account, first come first served."""
    # 10 a second: no token can accrue while the seven callers start, even on a machine that stalls
    limiter = RateLimiter(600, burst=1)
    await limiter.acquire("warm-up")  # empty the bucket so every caller below queues
    order: list[tuple[str, int]] = []

    async def call(account: str, n: int) -> None:
        await limiter.acquire(account)
        order.append((account, n))

    tasks = [asyncio.create_task(call("A", n)) for n in range(4)]
    tasks += [asyncio.create_task(call("B", n)) for n in range(2)]
    tasks += [asyncio.create_task(call("C", 0))]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
    assert order == [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("A", 2), ("A", 3)]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a waiting caller removes it: nothing waits, and the next caller gets the next token."""
    clock = FakeClock()
    limiter = RateLimiter(60, burst=1, clock=clock)
    await limiter.acquire("a")
    waiter = asyncio.create_task(limiter.acquire("a"))
    await _settle()
    assert limiter.snapshot()["waiting"] == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.snapshot()["waiting"] == 0
    clock.advance(1.0)
    await asyncio.wait_for(limiter.acquire("b"), timeout=1)
    assert limiter.snapshot()["granted_total"] == 2


async def test_a_waiter_cancelled_after_its_grant_gives_the_token_back() -> None:
    """A token granted to a caller cancelled before it ran goes to the next waiter, not to waste."""
    clock = FakeClock()
    limiter = RateLimiter(60, burst=1, clock=clock)
    await limiter.acquire("a")
    first = asyncio.create_task(limiter.acquire("a"))
    await _settle()
    clock.advance(1.0)  # exactly one token accrues
    second = asyncio.create_task(limiter.acquire("b"))
    await asyncio.sleep(0)  # `second` queues, which grants the token to `first` (queued earlier)
    first.cancel()  # ...before `first` could run
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, timeout=1)  # no time passed: it got `first`'s token
    snap = limiter.snapshot()
    assert (snap["granted_total"], snap["waiting"]) == (2, 0)
    assert snap["tokens"] < 1


async def test_pause_stops_every_account_and_only_ever_extends() -> None:
    """pause(s) holds all tokens for s seconds; a shorter pause later does not shorten it."""
    clock = FakeClock()
    limiter = RateLimiter(6000, clock=clock)
    limiter.pause(30)
    limiter.pause(5)
    assert limiter.snapshot()["paused_for"] == 30
    waiter = asyncio.create_task(limiter.acquire("b"))
    await _settle()
    clock.advance(29)
    await _settle()
    assert not waiter.done()
    assert limiter.snapshot()["waiting"] == 1
    limiter.pause(60)
    clock.advance(31)
    assert limiter.snapshot()["paused_for"] == 29
    await _cancel_all([waiter])


async def test_after_a_pause_requests_resume_one_at_a_time() -> None:
    """A pause waits in real time, then the first caller goes at once and no burst follows."""
    limiter = RateLimiter(600)  # 10 per second, burst 20
    limiter.pause(0.3)
    started = time.monotonic()
    await limiter.acquire("a")
    assert 0.29 <= time.monotonic() - started < 0.6
    assert limiter.snapshot()["tokens"] < 1
    assert limiter.snapshot()["paused_for"] == 0
