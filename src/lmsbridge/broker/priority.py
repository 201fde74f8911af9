"""Live work first: reconciliation's events wait while a webhook's work is under way.

A reconcile pass feeds what it found through the same intake queues as webhooks, and the worker
that handles both shares one event loop (and, on a small host, the CPU) between them. Live work
is what a platform and its users wait for; a repair found by reconciliation has waited hours
already. So a worker runs at most one reconcile job at a time, and starts it only when no live job
is under way, or once it has waited ``max_wait`` seconds (so a worker never idle still makes
progress on repairs).

A job is background work when its message id is one reconciliation made (``reconcile:...``);
everything else (webhooks, sync tasks, retries) is live.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["LiveFirst", "is_background"]

BACKGROUND_PREFIX = "reconcile:"


def is_background(message_id: str | None) -> bool:
    """Whether a message carries reconciliation's work rather than a webhook's."""
    return bool(message_id) and str(message_id).startswith(BACKGROUND_PREFIX)


class LiveFirst:
    """Counts live jobs under way; lets one background job run when there are none."""

    def __init__(self, *, max_wait: float = 2.0) -> None:
        self._max_wait = max_wait
        self._live = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._background = asyncio.Semaphore(1)
        self.deferred = 0  # background jobs that had to wait for live ones (for tests and metrics)

    @contextlib.asynccontextmanager
    async def live(self) -> AsyncIterator[None]:
        """Run a live job (never waits)."""
        self._live += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._live -= 1
            if self._live == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Run a background job: one at a time, once no live job is under way (or after ``max_wait``)."""
        async with self._background:
            if not self._idle.is_set():
                self.deferred += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), self._max_wait)
            yield
