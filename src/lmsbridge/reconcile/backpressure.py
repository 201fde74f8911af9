"""Live traffic first: a pass publishes only while the source's intake queue is nearly empty.

The drift a pass finds goes to the same intake queue as the source's live webhooks. Paced
to its share of the StackOne budget it never takes more of the LMS writes than it may, but a
page's worth of events published at once would still put live webhooks behind it. So before
each batch the pass reads the queue's depth (a passive declare) and waits while more than
``limit`` messages are ready (at most ``max_wait`` per batch, so a pass with no worker
running still ends): a live webhook never waits behind more than a handful of reconciliation
events.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractChannel

from lmsbridge.broker import Broker, Names

LIMIT = 8
POLL = 0.05
MAX_WAIT = 10.0  # per batch: with no worker consuming, a pass still queues (slowly), it never hangs


class IntakeBackpressure:
    """Waits while a source's intake queue holds more than ``limit`` ready messages."""

    def __init__(
        self, broker: Broker, names: Names, *, limit: int = LIMIT, poll: float = POLL, max_wait: float = MAX_WAIT
    ) -> None:
        self._broker = broker
        self._names = names
        self._limit = limit
        self._poll = poll
        self._max_wait = max_wait
        self._channel: AbstractChannel | None = None
        self.waited = 0.0

    async def wait(self, source: str) -> None:
        """Return once ``source``'s intake queue is short enough (at once if it is), or after ``max_wait``."""
        waited = 0.0
        while waited < self._max_wait and await self._depth(source) > self._limit:
            await asyncio.sleep(self._poll)
            waited += self._poll
        self.waited += waited

    async def _depth(self, source: str) -> int:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._broker.channel()  # not on the publishing connection, which an alarm blocks
        queue = await self._channel.declare_queue(self._names.intake(source), passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def close(self) -> None:
        """Close the channel it reads depths on."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
