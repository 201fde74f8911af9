"""The fault-injection ledger ("Proof"): under crashes, restarts and a misbehaving LMS, nothing is lost or doubled.

``lmsbridge serve`` and ``lmsbridge worker`` run as separate processes on the real RabbitMQ and a
SQLite file. Signed Exec webhooks from two sources (one pushing to two StackOne accounts, one to
one of them) are delivered like a platform retries, with duplicates and completions sent before
their assignment, while the worker is SIGKILLed three times, the receiver gets SIGTERM once,
RabbitMQ's application is stopped and started once, and StackOne answers 20 % of calls with 5xx,
5 % with 429 and 5 % slowly. The ledger must add up: every accepted event is in the LMS stand-in
exactly once (or dead-lettered with a reason), none is lost, nothing is written twice, and every
request was on StackOne's spec.

``LMSBRIDGE_FAULT_EVENTS`` sets the number of events (300 for the CI run, 100000 for ``make fault``);
``LMSBRIDGE_FAULT_WORKERS`` the number of workers, and ``LMSBRIDGE_FAULT_DATABASE=postgres`` runs them
on a fresh PostgreSQL database (``make fault WORKERS=3 DATABASE=postgres``; ``DATABASE=pgbouncer``
through a PgBouncer in transaction mode, which must be installed). The CI run includes a
small ledger with three workers on PostgreSQL, a kill hitting any of them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

import pytest

from lmsbridge.testing.stackone import StackOneStandIn
from tests.faults.conftest import Run, run_ledger
from tests.faults.pgbouncer import pgbouncer

pytestmark = pytest.mark.serial  # stops RabbitMQ mid-run


def database_from_env(request: pytest.FixtureRequest, stack: contextlib.ExitStack) -> str | None:
    """A fresh PostgreSQL database when ``LMSBRIDGE_FAULT_DATABASE=postgres`` (through a PgBouncer in
    transaction mode, held open by ``stack``, with ``pgbouncer``), else None (a SQLite file)."""
    kind = os.environ.get("LMSBRIDGE_FAULT_DATABASE", "sqlite")
    if kind not in ("sqlite", "postgres", "pgbouncer"):
        pytest.fail(f"LMSBRIDGE_FAULT_DATABASE={kind}: sqlite, postgres or pgbouncer")
    if kind == "sqlite":
        return None
    url = str(request.getfixturevalue("pg_url"))
    return stack.enter_context(pgbouncer(url)) if kind == "pgbouncer" else url


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


async def small_ledger(
    n: int,
    title: str,
    *,
    amqp_url: str,
    prefix: str,
    stackone: StackOneStandIn,
    tmp_path: Path,
    log: IO[bytes],
    **kw: Any,
) -> None:
    """A CI-sized run under every fault (``kw``: seed, database_url, workers), its ledger checked."""
    run = await run_ledger(
        n,
        amqp_url=amqp_url,
        prefix=prefix,
        stackone=stackone,
        workdir=tmp_path,
        log=log,
        rate=max(20.0, n / 15.0),
        concurrency=32,
        kill_window=(0.05, 0.4),
        log_level="info",
        timeout=170.0,
        **kw,
    )
    print(run.show(f"{title}, N={n}"))
    check(run)
    assert stackone.violations == []


async def test_fault_ledger_small(
    amqp_url: str,
    broker_prefix: str,
    faulty_stackone: StackOneStandIn,
    tmp_path: Path,
    run_log: IO[bytes],
) -> None:
    """A CI-sized ledger (``LMSBRIDGE_FAULT_EVENTS``, default 300) under every fault: none lost, none doubled."""
    n = int(os.environ.get("LMSBRIDGE_FAULT_EVENTS", "300"))
    await small_ledger(
        n,
        "small",
        amqp_url=amqp_url,
        prefix=broker_prefix,
        stackone=faulty_stackone,
        tmp_path=tmp_path,
        log=run_log,
        seed=1,
    )


@pytest.mark.postgres
async def test_fault_ledger_three_workers_on_postgresql(
    amqp_url: str,
    broker_prefix: str,
    faulty_stackone: StackOneStandIn,
    tmp_path: Path,
    run_log: IO[bytes],
    pg_url: str,
) -> None:
    """The same faults with three workers sharing one PostgreSQL database, each kill hitting one of them
    at random: none lost, none doubled, every request on StackOne's spec."""
    n = int(os.environ.get("LMSBRIDGE_FAULT_EVENTS_PG", "200"))
    await small_ledger(
        n,
        "three workers on PostgreSQL",
        amqp_url=amqp_url,
        prefix=broker_prefix,
        stackone=faulty_stackone,
        tmp_path=tmp_path,
        log=run_log,
        seed=3,
        database_url=pg_url,
        workers=3,
    )


@pytest.mark.slow
async def test_fault_ledger_full(
    amqp_url: str,
    broker_prefix: str,
    faulty_stackone: StackOneStandIn,
    tmp_path: Path,
    run_log: IO[bytes],
    request: pytest.FixtureRequest,
) -> None:
    """The full ledger (``LMSBRIDGE_FAULT_EVENTS``, default 100000) under every fault: none lost, none doubled.

    The faults are spread over the whole run: the receiver and RabbitMQ restarts at random
    points of the sending, the three worker kills at random points of the LMS writes.
    """
    n = int(os.environ.get("LMSBRIDGE_FAULT_EVENTS", "100000"))
    workers = int(os.environ.get("LMSBRIDGE_FAULT_WORKERS", "1"))
    with contextlib.ExitStack() as stack:
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
            database_url=database_from_env(request, stack),
            workers=workers,
        )
    print(run.show(f"full, N={n}, {workers} worker(s), {os.environ.get('LMSBRIDGE_FAULT_DATABASE', 'sqlite')}"))
    check(run)
    assert faulty_stackone.violations == []
