"""Stopping the runtime's background loops (``runtime.cancel_all``)."""

from __future__ import annotations

import asyncio
import contextlib

from lmsbridge.runtime import cancel_all


async def test_a_loop_that_swallows_its_cancellation_still_ends_when_stopped() -> None:
    """A background loop whose step turns the CancelledError into an error it suppresses (as a
    library call may) goes back to its sleep; stopping cancels it again and it ends, where awaiting
    it once cancelled hung for ever. A well-behaved loop ends at the first cancellation."""
    swallowed = 0

    async def step() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed += 1
            raise RuntimeError("the channel closed") from None  # a library's own error

    async def stubborn() -> None:
        while True:
            with contextlib.suppress(Exception):
                await step()
            await asyncio.sleep(15)

    async def plain() -> None:
        while True:
            await asyncio.sleep(15)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(plain())]
    await asyncio.sleep(0.05)  # both are waiting inside their loops
    await asyncio.wait_for(cancel_all(tasks, every=0.1), timeout=5)
    assert all(task.done() for task in tasks)
    assert swallowed == 1  # the first cancellation was swallowed; the second ended it
