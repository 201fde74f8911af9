"""Requests waiting for StackOne's budget, served live lane first, by account in turn; and the cap on a pause.

Both doors to the budget (:class:`~lmsbridge.stackone.ratelimit.RateLimiter`, this process's
bucket, and :class:`~lmsbridge.stackone.shared_budget.SharedRateLimiter`, the key's budget in
the database) queue waiters the same way: every live request before any background one
(:mod:`lmsbridge.lanes`: a reconcile pass's requests never make a webhook's wait), then FIFO
within an account and round-robin across accounts.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

from lmsbridge.logs import get_logger

log = get_logger(__name__)

__all__ = ["LIVE_RUN", "Turns", "capped_pause"]

LIVE_RUN = 7
"""Live grants in a row, while background requests wait, before one background grant (1 in 8)."""


def capped_pause(seconds: float, max_pause: float) -> float | None:
    """The pause to apply for a ``Retry-After`` of ``seconds``: None when there is none, else at most
    ``max_pause`` (a longer or non-finite ask is cut, and logged)."""
    if math.isnan(seconds) or seconds <= 0:
        return None
    if seconds > max_pause:
        log.warning("stackone.pause_capped", asked=seconds, pause=max_pause)
        return max_pause
    return seconds


class _Rotation:
    """One lane's waiters by account; the next one served is the next account's oldest."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._rotation: deque[str] = deque()  # accounts with waiters, next to serve first

    def join(self, account: str, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(account)
        if queue is None:
            queue = self._queues[account] = deque()
            self._rotation.append(account)
        queue.append(future)

    def peek(self) -> asyncio.Future[None] | None:
        """The next waiter to serve (cancelled ones are dropped on the way), None when nobody waits."""
        while self._rotation:
            account = self._rotation[0]
            queue = self._queues[account]
            while queue and queue[0].done():
                queue.popleft()
            if queue:
                return queue[0]
            self._rotation.popleft()
            del self._queues[account]
        return None

    def pop(self) -> None:
        """Remove the waiter :meth:`peek` returned; its account goes to the back of the rotation."""
        account = self._rotation.popleft()
        queue = self._queues[account]
        queue.popleft()
        if queue:
            self._rotation.append(account)
        else:
            del self._queues[account]


class Turns:
    """Waiting requests in two lanes (:mod:`lmsbridge.lanes`), each by account in turn.

    A live request waiting is served before a background one, except that after
    :data:`LIVE_RUN` live grants in a row with background requests waiting the next grant is
    theirs: live traffic that fills the budget for hours slows a reconcile pass to one grant in
    ``LIVE_RUN + 1``, it does not stop it (its syncs would outlive their leases). Within a lane,
    FIFO per account and round-robin across accounts, so one account's backlog of thousands
    cannot starve an account that has one request.
    """

    def __init__(self) -> None:
        self._lanes = (_Rotation(), _Rotation())  # live, background
        self._behind: set[asyncio.Future[None]] = set()  # the background lane's waiters
        self._live_run = 0  # live grants in a row while background requests waited
        self.waiting = 0

    def __bool__(self) -> bool:
        return self.waiting > 0

    def ahead_of(self, background: bool) -> int:
        """How many waiting requests a new one of that lane would be served after."""
        return self.waiting if background else self.waiting - len(self._behind)

    def join(self, account: str, *, background: bool = False) -> asyncio.Future[None]:
        """A future that completes when ``account``'s request is served."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lanes[background].join(account, future)
        if background:
            self._behind.add(future)
        self.waiting += 1
        return future

    def leave(self, future: asyncio.Future[None]) -> None:
        """A waiter cancelled before it was served (it is skipped when its turn comes); no-op once served."""
        if future.done() and not future.cancelled():
            return
        future.cancel()
        self._behind.discard(future)
        self.waiting -= 1

    def serve_next(self, take: Callable[[], bool] = lambda: True) -> bool | None:
        """Serve the next waiter in turn if ``take()`` agrees; None when nobody waits, False when ``take`` refused."""
        live, background = self._lanes
        order = (background, live) if self._live_run >= LIVE_RUN and self._behind else (live, background)
        for rotation in order:
            future = rotation.peek()
            if future is None:
                continue
            if not take():
                return False
            rotation.pop()
            future.set_result(None)
            if rotation is live and self._behind:
                self._live_run += 1
            else:
                self._live_run = 0
            self._behind.discard(future)
            self.waiting -= 1
            return True
        return None

    def clear(self) -> None:
        """Forget every waiter (their event loop is gone)."""
        self._lanes = (_Rotation(), _Rotation())
        self._behind.clear()
        self.waiting = 0
