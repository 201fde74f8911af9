"""Consumers racing over one record: a crash, a stall or a merge mid-sync never doubles or loses a write.

Two :class:`Service` instances stand for two worker processes sharing one SQLite file; they
talk to the StackOne stand-in over real HTTP. Only the sync queue is a collecting fake, so the
test decides who syncs when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmsbridge.errors import LeaseBusy
from lmsbridge.service import Service
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import two_workers
from tests.test_convergence import EVENTS

ACCOUNT = "acc-crash"


@dataclass
class Worker:
    """One worker process's service, with a clock the test moves."""

    service: Service
    now: list[float]


@pytest.fixture
async def workers(stackone: StackOneStandIn, tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker, int]]:
    """Two workers on one database; the first event is ingested, its record id returned."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    async with two_workers(stackone, tmp_path / "crash.db", ACCOUNT, 30.0) as (_, built):
        a, b = (Worker(service, now) for service, now in built)
        _, [rid] = await a.service.ingest(EVENTS[0])
        yield a, b, rid


def _posts(stackone: StackOneStandIn) -> int:
    return sum(1 for r in stackone.requests if r.method == "POST" and r.path.endswith("/assignments"))


async def test_a_worker_killed_mid_create_is_not_written_again(
    workers: tuple[Worker, Worker, int], stackone: StackOneStandIn
) -> None:
    """Worker A dies while its create is in flight (the LMS writes it); B waits out A's lease, lists, finds it."""
    a, b, rid = workers
    stackone.fail_next(0, delay=1.0, path_contains="/assignments")  # hangs 1 s, then writes
    dying = asyncio.create_task(a.service.sync(rid, ACCOUNT))
    while not any(r.path.endswith("/assignments") and r.status == 0 for r in stackone.requests):
        await asyncio.sleep(0.01)
    dying.cancel()  # the process is gone (or its drain ran out); its request is not
    with pytest.raises(asyncio.CancelledError):
        await dying
    with pytest.raises(LeaseBusy):  # while the request may be in flight, nobody lists or writes
        await b.service.sync(rid, ACCOUNT)
    await asyncio.sleep(1.3)
    assert len(stackone.assignments(ACCOUNT)) == 1

    b.now[0] += 31.0  # A's lease has run out
    result = await b.service.sync(rid, ACCOUNT)

    assert len(stackone.assignments(ACCOUNT)) == 1
    assert _posts(stackone) == 1, "B created the assignment a second time"
    assert any(r.method == "GET" and r.path.endswith("/assignments") for r in stackone.requests), "B did not list"
    assert result.steps  # B recorded the write it found
    assert (await b.service.leases.load_sync(rid, ACCOUNT)).status == "synced"  # type: ignore[union-attr]
    assert not stackone.violations


async def test_a_worker_whose_lease_ran_out_does_not_write(
    workers: tuple[Worker, Worker, int], stackone: StackOneStandIn
) -> None:
    """A worker stalled past its lease (a slow user lookup) is stopped before its create; B writes it once."""
    a, b, rid = workers
    stackone.fail_next(0, delay=1.0, path_contains="/users")  # A's user lookup hangs for 1 s
    stalled = asyncio.create_task(a.service.sync(rid, ACCOUNT))
    while not any(r.path.endswith("/users") and r.status == 0 for r in stackone.requests):
        await asyncio.sleep(0.01)
    a.now[0] += 31.0  # while A waits, its lease runs out ...
    b.now[0] += 31.0
    assert (await b.service.sync(rid, ACCOUNT)).steps  # ... and B takes the record over and writes it

    with pytest.raises(LeaseBusy):
        await stalled
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert _posts(stackone) == 1, "the stalled worker wrote after losing its lease"
    assert not stackone.violations


async def test_a_completion_merged_during_a_sync_is_still_written(
    workers: tuple[Worker, Worker, int], stackone: StackOneStandIn
) -> None:
    """A completion stored while another worker writes the assignment is written by the next sync, not lost."""
    a, b, rid = workers
    stackone.fail_next(0, delay=0.5, path_contains="/assignments")  # A's assignment POST takes 0.5 s
    writing = asyncio.create_task(a.service.sync(rid, ACCOUNT))
    while not any(r.path.endswith("/assignments") and r.status == 0 for r in stackone.requests):
        await asyncio.sleep(0.01)
    _, ids = await b.service.ingest(EVENTS[1])  # the completion arrives meanwhile
    assert ids == (rid,)
    await writing  # A saw only the assignment, and marks the row synced

    await b.service.sync(rid, ACCOUNT)  # the completion's own sync task

    assert len(stackone.assignments(ACCOUNT)) == 1
    assert len(stackone.completions(ACCOUNT)) == 1
    assert not stackone.violations
