"""Live first within a process: background jobs start in the gaps between live ones."""

from __future__ import annotations

import asyncio
import time

import pytest

from lmsbridge.lanes import LiveFirst

pytestmark = pytest.mark.usefixtures("steady_gc")  # times sub-second behaviour in this process


async def test_a_background_job_starts_only_once_no_live_job_is_in_flight() -> None:
    """Two live jobs overlap; a background job asked to start meanwhile starts right after the last ends."""
    gate = LiveFirst(patience=5.0)
    order: list[str] = []

    async def live(name: str, seconds: float) -> None:
        with gate.live():
            await asyncio.sleep(seconds)
            order.append(name)

    async def background() -> None:
        await gate.gap()
        order.append("background")

    first = asyncio.create_task(live("live-1", 0.05))
    second = asyncio.create_task(live("live-2", 0.1))
    await asyncio.sleep(0)
    await asyncio.gather(background(), first, second)
    assert order == ["live-1", "live-2", "background"]


async def test_without_live_work_a_background_job_starts_at_once() -> None:
    """No live job in flight: the gap is there already, nothing is waited for."""
    gate = LiveFirst(patience=5.0)
    began = time.perf_counter()
    await gate.gap()
    assert time.perf_counter() - began < 0.01


async def test_unbroken_live_work_holds_a_background_job_back_no_longer_than_its_patience() -> None:
    """Live work that never pauses (a flood) delays a background job by ``patience``, not forever."""
    gate = LiveFirst(patience=0.1)
    with gate.live():
        began = time.perf_counter()
        await gate.gap()
        waited = time.perf_counter() - began
    assert 0.09 <= waited < 0.5


async def test_a_live_job_that_fails_still_ends_its_hold() -> None:
    """A live job raising out of its block leaves no count behind: the next background job starts at once."""
    gate = LiveFirst(patience=5.0)
    try:
        with gate.live():
            raise RuntimeError("the sync failed")
    except RuntimeError:
        pass
    began = time.perf_counter()
    await gate.gap()
    assert time.perf_counter() - began < 0.01
