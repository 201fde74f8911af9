"""A token bucket for one StackOne API key, fair across the accounts that share it.

StackOne limits requests per API key (1,000 a minute), not per linked account, so every
consumer in the process draws from one bucket. Waiters queue per account and tokens are
handed out round-robin over the accounts with waiters, so one account's backlog of
thousands cannot starve an account that has one message.

There is no dispatcher task: a grant happens synchronously when a token is available,
otherwise one timer (``loop.call_later``) is armed for the moment the next token will be.
Nothing is left running when the loop closes, and a cancelled waiter never leaks a token.

A pause (a 429's ``Retry-After``) stops every account of the key, so it is bounded by
``max_pause`` (``stackone.max_pause_seconds``): ``Retry-After: 86400`` or a non-finite value
slipped past a parser must not stop all traffic for a day or for ever.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Protocol

from lmsbridge.lanes import in_background, lane
from lmsbridge.logs import get_logger
from lmsbridge.stackone.turns import Turns, capped_pause

log = get_logger(__name__)

# Arm timers a hair late, so a timer that fires early on a coarse clock does not spin.
_EPSILON = 1e-4


class Budget(Protocol):
    """What the StackOne client draws on: this process's bucket, or the key's shared budget."""

    async def acquire(self, account: str) -> None:
        """Wait until ``account`` may send one request."""
        ...

    def pause(self, seconds: float) -> None:
        """No requests for ``seconds`` (a 429's Retry-After)."""
        ...

    def snapshot(self) -> dict[str, float]:
        """At least ``per_minute``, ``waiting``, ``paused_for`` and ``granted_total``."""
        ...


class RateLimiter:
    """Token bucket for ONE StackOne API key, shared by every consumer in the process.

    Waiters are served round-robin by account, so one account's backlog cannot starve another.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_pause: float = 300.0,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if not 0 < max_pause < math.inf:
            raise ValueError("max_pause must be positive and finite")
        self._max_pause = max_pause
        self._per_minute = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._burst = max(1.0, burst if burst is not None else self._rate * 2)
        self._clock = clock
        self._tokens = self._burst
        self._updated = clock()
        self._paused_until = float("-inf")
        self._granted = 0
        self._turns = Turns()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public -------------------------------------------------------------------------

    async def acquire(self, account: str) -> None:
        """Wait for a token; FIFO within an account, round-robin across accounts."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._bind(loop)
        if not self._turns and self._take():
            return
        future = self._turns.join(account, background=in_background())
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted, but cancelled before it could run: hand the token back.
                self._tokens += 1.0
                self._granted -= 1
                self._dispatch()
            else:
                self._turns.leave(future)
            raise

    def pause(self, seconds: float) -> None:
        """No tokens for anyone until now + ``seconds`` (extends a pause, never shortens it).

        The bucket does not refill during a pause and keeps at most one token, so the
        first request after it is a single probe, not a burst. A pause longer than
        ``max_pause`` (or not finite) is cut to ``max_pause``, and logged.
        """
        capped = capped_pause(seconds, self._max_pause)
        if capped is None:
            return
        seconds = capped
        now = self._clock()
        self._refill(now)
        until = now + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._tokens = min(self._tokens, 1.0)
            self._updated = until

    def snapshot(self) -> dict[str, float]:
        """``per_minute``, ``tokens``, ``waiting``, ``paused_for`` (seconds) and ``granted_total``."""
        now = self._clock()
        self._refill(now)
        return {
            "per_minute": self._per_minute,
            "tokens": self._tokens,
            "waiting": float(self._turns.waiting),
            "paused_for": max(0.0, self._paused_until - now),
            "granted_total": float(self._granted),
        }

    # --- internals ----------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use ``loop`` for timers; waiters from a previous (closed) loop are forgotten."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._turns.clear()
        self._loop = loop

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    def _take(self) -> bool:
        """Take a token now if one is available and no pause is on."""
        now = self._clock()
        if now < self._paused_until:
            return False
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        self._granted += 1
        return True

    def _dispatch(self) -> None:
        """Grant every token available to waiters in round-robin order; arm a timer for the rest."""
        while True:
            served = self._turns.serve_next(self._take)
            if served is None:
                return
            if not served:
                self._arm()
                return

    def _arm(self) -> None:
        if self._timer is not None or self._loop is None:
            return
        paused_for = self._paused_until - self._clock()
        delay = paused_for if paused_for > 0 else max(0.0, 1.0 - self._tokens) / self._rate
        self._timer = self._loop.call_later(delay + _EPSILON, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()


class SubBudget(RateLimiter):
    """A share of another limiter's budget, for work that must never starve live traffic (reconciliation).

    A request takes a token from this smaller bucket (``share`` of the parent's rate), then one
    from the parent's, so it counts against the API key like any other and gets at most
    ``share`` of it; a pause (429) on either pauses both.
    """

    def __init__(self, parent: Budget, share: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        per_minute = parent.snapshot()["per_minute"] * share
        super().__init__(per_minute, burst=max(1.0, per_minute / 600), clock=clock)
        self.parent = parent

    async def acquire(self, account: str) -> None:
        """Wait for this budget's token, then the parent's (behind every live request waiting there)."""
        with lane(background=True):
            await super().acquire(account)
            await self.parent.acquire(account)

    def pause(self, seconds: float) -> None:
        """Pause this budget and the parent's (the API key is what StackOne limits)."""
        super().pause(seconds)
        self.parent.pause(seconds)
