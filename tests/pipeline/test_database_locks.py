"""A lock another session holds on PostgreSQL: the worker's writes wait a bounded time, say so, and
retry; the worker pauses and stays paused until the lock goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from structlog.testing import capture_logs

from lmsbridge.storage.engine import STATEMENT_WAIT
from lmsbridge.storage.repository import PROBE_LOCK_WAIT
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign
from tests.pipeline.conftest import ACCOUNT, SettingsFactory, settled

PEOPLE = [f"locked{i}@acme.example" for i in range(5)]


async def test_a_table_locked_by_another_session_fails_writes_after_a_bound_then_they_land(
    make_settings: SettingsFactory, stackone: StackOneStandIn, start_runtime: Start, sender_for: Sender, pg_url: str
) -> None:
    """An operator's session holds a lock on ``records`` (a transaction left open in psql). The
    worker's write waits ``STATEMENT_WAIT`` (30 s), then fails as a database fault, logged as
    ``event.retried`` naming the wait (before: it waited for as long as the lock was held, without
    a line in the log). The worker then pauses on the database, and its probe, which takes the
    lock a write to each live table takes, keeps failing while the lock is held (before: the probe
    wrote nothing and succeeded, so the worker resumed only to wait 30 s again, and the
    ``database_paused`` gauge kept falling to 0). Once the lock is released the worker resumes and
    every assignment reaches the LMS once."""
    for email in PEOPLE:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings(database_url=pg_url, broker={"breaker_min_calls": 1}, worker={"pause_probe_seconds": 1.0})
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    parts = urlsplit(pg_url)
    holder = await asyncpg.connect(f"postgresql://{parts.netloc}{parts.path}")
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE records IN SHARE ROW EXCLUSIVE MODE")  # blocks writes, not reads
        with capture_logs() as logs:
            started = time.monotonic()
            for i, email in enumerate(PEOPLE):
                await assign(sender, email, scenario=f"locked-{i}")
            retried: list[MutableMapping[str, Any]] = []
            while not retried and time.monotonic() - started < STATEMENT_WAIT + 15:
                await asyncio.sleep(0.5)
                retried = [e for e in logs if e["event"] == "event.retried"]
            waited = time.monotonic() - started
            probes: list[MutableMapping[str, Any]] = []
            while len(probes) < 2 and time.monotonic() - started < waited + 4 * (PROBE_LOCK_WAIT + 4):
                await asyncio.sleep(0.5)
                probes = [e for e in logs if e["event"] in ("database.still_failing", "database.resumed")]
            paused_while_locked = runtime.consumer is not None and runtime.consumer.database_paused
            written_while_locked = stackone.assignments(ACCOUNT)
            await locked.rollback()
            resumed_at = time.monotonic()
            while not any(e["event"] == "database.resumed" for e in logs) and time.monotonic() - resumed_at < 30:
                await asyncio.sleep(0.2)
    finally:
        await holder.close()
    assert retried, "the worker waited on the lock without failing or logging anything"
    assert f"no answer within {STATEMENT_WAIT:g} s" in str(retried[0]["error"])
    assert STATEMENT_WAIT - 1 <= waited <= STATEMENT_WAIT + 15
    assert [e["event"] for e in probes] == ["database.still_failing"] * 2, probes
    assert "55P03" in str(probes[0]["error"])  # lock_not_available: the probe's lock wait ran out
    assert paused_while_locked
    assert any(e["event"] == "database.resumed" for e in logs)
    assert written_while_locked == []
    counts = await settled(runtime, timeout=30)
    written = [(a["user_id"], a["body"]["learning_object_external_reference"]) for a in stackone.assignments(ACCOUNT)]
    assert len(written) == len(set(written)) == len(PEOPLE)
    assert counts == {ACCOUNT: {"synced": len(PEOPLE)}}


async def test_a_sync_cut_by_the_database_going_away_takes_its_own_lease_again(
    make_settings: SettingsFactory,
    stackone: StackOneStandIn,
    start_runtime: Start,
    sender_for: Sender,
    pg_url: str,
    pg_admin_url: str,
) -> None:
    """The database goes away (a restart, a failover) while a sync waits for StackOne, which then
    refuses the create (500): the worker cannot give its lease back. Once the database is back, its
    next attempt takes that lease again and writes the assignment within seconds (before: it waited
    out ``worker.sync_lease_seconds``, 120 s here, its own lease held against it)."""
    stackone.add_user(ACCOUNT, "cut@acme.example")
    settings = make_settings(database_url=pg_url, worker={"sync_lease_seconds": 120.0})
    runtime = await start_runtime(settings)
    name = urlsplit(pg_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_admin_url)
    try:
        stackone.fail_next(500, delay=1.0, path_contains="/assignments", method="POST")
        requests = len(stackone.requests)
        await assign(sender_for(runtime), "cut@acme.example", scenario="cut")
        while not any(r.method == "POST" for r in stackone.requests[requests:]):
            await asyncio.sleep(0.02)
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await asyncio.sleep(3.0)  # the 500 came back meanwhile; the lease could not be given back
        assert stackone.assignments(ACCOUNT) == []
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        back = time.monotonic()
        while not stackone.assignments(ACCOUNT) and time.monotonic() - back < 30:
            await asyncio.sleep(0.1)
        waited = time.monotonic() - back
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    assert stackone.assignments(ACCOUNT), "not written within 30 s of the database coming back"
    assert waited < 15
    assert await settled(runtime, timeout=30) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.assignments(ACCOUNT)) == 1
