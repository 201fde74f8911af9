"""Requests waiting for StackOne's budget, served by account in turn; and the cap on a pause.

Both doors to the budget (:class:`~lmsbridge.stackone.ratelimit.RateLimiter`, this process's
bucket, and :class:`~lmsbridge.stackone.shared_budget.SharedRateLimiter`, the key's budget in
the database) queue waiters the same way: FIFO within an account, round-robin across accounts,
so one account's backlog of thousands cannot starve an account that has one request.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

from lmsbridge.logs import get_logger

log = get_logger(__name__)

__all__ = ["Turns", "capped_pause"]


def capped_pause(seconds: float, max_pause: float) -> float | None:
    """The pause to apply for a ``Retry-After`` of ``seconds``: None when there is none, else at most
    ``max_pause`` (a longer or non-finite ask is cut, and logged)."""
    if math.isnan(seconds) or seconds <= 0:
        return None
    if seconds > max_pause:
        log.warning("stackone.pause_capped", asked=seconds, pause=max_pause)
        return max_pause
    return seconds


class Turns:
    """Waiting requests by account; the next one served is the next account's oldest."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._rotation: deque[str] = deque()  # accounts with waiters, next to serve first
        self.waiting = 0

    def __bool__(self) -> bool:
        return bool(self._rotation)

    def join(self, account: str) -> asyncio.Future[None]:
        """A future that completes when ``account``'s request is served."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(account)
        if queue is None:
            queue = self._queues[account] = deque()
            self._rotation.append(account)
        queue.append(future)
        self.waiting += 1
        return future

    def leave(self, future: asyncio.Future[None]) -> None:
        """A waiter cancelled before it was served (it is skipped when its turn comes); no-op once served."""
        if future.done() and not future.cancelled():
            return
        future.cancel()
        self.waiting -= 1

    def serve_next(self, take: Callable[[], bool] = lambda: True) -> bool | None:
        """Serve the next waiter in turn if ``take()`` agrees; None when nobody waits, False when ``take`` refused."""
        while self._rotation:
            account = self._rotation[0]
            queue = self._queues[account]
            while queue and queue[0].done():  # cancelled waiters
                queue.popleft()
            if not queue:
                self._rotation.popleft()
                del self._queues[account]
                continue
            if not take():
                return False
            self._rotation.popleft()
            queue.popleft().set_result(None)
            self.waiting -= 1
            if queue:
                self._rotation.append(account)
            else:
                del self._queues[account]
            return True
        return None

    def clear(self) -> None:
        """Forget every waiter (their event loop is gone)."""
        self._queues.clear()
        self._rotation.clear()
        self.waiting = 0
