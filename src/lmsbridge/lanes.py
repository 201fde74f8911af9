"""Two lanes of work: live (webhooks and their syncs) and background (reconciliation).

Background work is everything a reconcile pass causes: the events it queues, the syncs they
start, the LMS reads of ``reconcile --lms`` and the syncs it queues again. It is marked once,
where it starts (an AMQP header on its messages, decoded into
:attr:`~lmsbridge.broker.codec.Job.background`), and the consumer runs the job inside
:func:`lane`. Below that, nothing is passed along by hand: the StackOne budget reads
:func:`in_background` when a request joins its queue, and serves every live request waiting
before any background one (a live webhook never waits behind the slots of a pass), and the
consumer starts a background job only in a gap between live ones (:class:`LiveFirst`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["BACKGROUND_HEADER", "LiveFirst", "in_background", "lane"]

# Not "x-" prefixed, like the delay header: a plain application header.
BACKGROUND_HEADER = "lmsbridge-background"

_background: ContextVar[bool] = ContextVar("lmsbridge_background", default=False)


def in_background() -> bool:
    """Whether the running task works for the background lane."""
    return _background.get()


@contextmanager
def lane(background: bool) -> Iterator[None]:
    """Run the block (and the tasks it starts) in the background lane, or explicitly in the live one."""
    token = _background.set(background)
    try:
        yield
    finally:
        _background.reset(token)


class LiveFirst:
    """Background jobs start in the gaps between live ones, within one process.

    A live job holds :meth:`live` while it runs; a background job awaits :meth:`gap` before it
    starts, which returns once no live job is in flight, or after ``patience`` seconds of
    unbroken live work (so a pass still moves under a steady flood). A live webhook then shares
    the event loop and the database thread with the background jobs already running, not with
    every one a pass has queued: a background job that is running is not interrupted.
    """

    def __init__(self, patience: float = 1.0) -> None:
        self.patience = patience
        self._live = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def live(self) -> Iterator[None]:
        """Count one live job in flight for the block."""
        self._live += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._live -= 1
            if self._live == 0:
                self._idle.set()

    async def gap(self) -> None:
        """Wait until no live job is in flight (at most ``patience`` seconds)."""
        if self._live == 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.patience):
                await self._idle.wait()
