"""Two lanes of work: live (webhooks and their syncs) and background (reconciliation).

Background work is everything a reconcile pass causes: the events it queues, the syncs they
start, the LMS reads of ``reconcile --lms`` and the syncs it queues again. It is marked once,
where it starts (an AMQP header on its messages, decoded into
:attr:`~lmsbridge.broker.codec.Job.background`), and the consumer runs the job inside
:func:`lane`. Below that, nothing is passed along by hand: the StackOne budget reads
:func:`in_background` when a request joins its queue, and serves every live request waiting
before any background one (a live webhook never waits behind the slots of a pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["BACKGROUND_HEADER", "in_background", "lane"]

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
