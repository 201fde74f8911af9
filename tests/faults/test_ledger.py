"""The fault-injection ledger ("Proof"): under crashes, restarts and a misbehaving LMS, nothing is lost or doubled.

``lmsbridge serve`` and ``lmsbridge worker`` run as separate processes on the real RabbitMQ and a
SQLite file. Signed Exec webhooks from two sources (one pushing to two StackOne accounts, one to
one of them) are delivered like a platform retries, with duplicates and completions sent before
their assignment, while the worker is SIGKILLed three times, the receiver gets SIGTERM once,
RabbitMQ's application is stopped and started once, and StackOne answers 20 % of calls with 5xx,
5 % with 429 and 5 % slowly. The ledger must add up: every accepted event is in the LMS stand-in
exactly once (or dead-lettered with a reason), none is lost, nothing is written twice, and every
request was on StackOne's spec.

``LMSBRIDGE_FAULT_EVENTS`` sets the number of events (300 for the CI run, 100000 for ``make fault``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import pytest

from lmsbridge.testing.stackone import StackOneStandIn
from tests.faults.conftest import Run, run_ledger


def check(run: Run) -> None:
    """The ledger's promises."""
    ledger = run.ledger
    assert ledger.accepted == ledger.sent, "the platform gave up on some events"
    assert ledger.lost == 0, ledger.lost_examples[:10]
    assert ledger.in_lms + ledger.dead_lettered == ledger.accepted
    assert ledger.duplicates == 0, ledger.duplicate_examples[:10]
    assert ledger.phantoms == 0
    assert ledger.conflicts == ledger.conflicts_handled, "a 409 was not handled as 'already written'"
    assert all(reason and reason != "unknown" for reason in ledger.dead_reasons), ledger.dead_reasons
    assert ledger.violations == 0
    assert run.faults.done, run.faults.timeline
    assert ("receiver (SIGTERM)", 0) in run.exit_codes


async def test_fault_ledger_small(
    amqp_url: str,
    broker_prefix: str,
    faulty_stackone: StackOneStandIn,
    tmp_path: Path,
    run_log: IO[bytes],
) -> None:
    """A CI-sized ledger (``LMSBRIDGE_FAULT_EVENTS``, default 300) under every fault: none lost, none doubled."""
    n = int(os.environ.get("LMSBRIDGE_FAULT_EVENTS", "300"))
    run = await run_ledger(
        n,
        amqp_url=amqp_url,
        prefix=broker_prefix,
        stackone=faulty_stackone,
        workdir=tmp_path,
        log=run_log,
        seed=1,
        rate=max(20.0, n / 15.0),
        concurrency=32,
        kill_window=(0.05, 0.4),
        log_level="info",
        timeout=170.0,
    )
    print(run.show(f"small, N={n}"))
    check(run)
    assert faulty_stackone.violations == []


@pytest.mark.slow
async def test_fault_ledger_full(
    amqp_url: str,
    broker_prefix: str,
    faulty_stackone: StackOneStandIn,
    tmp_path: Path,
    run_log: IO[bytes],
) -> None:
    """The full ledger (``LMSBRIDGE_FAULT_EVENTS``, default 100000) under every fault: none lost, none doubled.

    The faults are spread over the whole run: the receiver and RabbitMQ restarts at random
    points of the sending, the three worker kills at random points of the LMS writes.
    """
    n = int(os.environ.get("LMSBRIDGE_FAULT_EVENTS", "100000"))
    run = await run_ledger(
        n,
        amqp_url=amqp_url,
        prefix=broker_prefix,
        stackone=faulty_stackone,
        workdir=tmp_path,
        log=run_log,
        seed=2,
        rate=max(20.0, n / 60.0),
        concurrency=64,
        kill_window=(0.05, 0.9),
        log_level="warning",
        timeout=600.0 + n * 0.2,
    )
    print(run.show(f"full, N={n}"))
    check(run)
    assert faulty_stackone.violations == []
