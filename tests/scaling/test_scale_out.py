"""Scale-out proof: two receivers and three, then four, workers on PostgreSQL share one StackOne budget.

Real processes (``lmsbridge serve`` twice on one port with ``receiver.reuse_port``, ``lmsbridge
worker`` three times), the real RabbitMQ and a fresh PostgreSQL database. Signed webhooks from two
sources go to three StackOne accounts (with re-deliveries and completions sent before their
assignment); one worker is SIGKILLed mid-run and started again, and a fourth worker joins later.
The StackOne stand-in enforces the API key's limit over a sliding minute (a 429 with
``Retry-After`` above it) and counts the 429s it had to send.

Nobody sets a per-process share: the workers draw on the budget in the database. The promises:
every record in the LMS exactly once, none lost, 0 requests over the limit, and the busiest
minute uses at least 95 % of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import pytest

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.testing.stackone import StackOneStandIn
from tests.conftest import remember_accounts
from tests.faults.conftest import (
    PARTNERS,
    SALES,
    STACKONE_KEY,
    Cluster,
    Platform,
    draw_up,
    expected_writes,
    people,
    plan,
    quiet,
    records_by_id,
)

LIMIT = 1200  # requests a minute for the API key, enforced by the stand-in (20/s: CPU to spare on 2 cores)
EVENTS = 720  # about 77 s of the key's budget (1,530 requests): the busiest minute is a full one
ACCOUNTS_OF = {SALES: ["acc-east", "acc-west"], PARTNERS: ["acc-north"]}
ACCOUNTS = sorted({a for accounts in ACCOUNTS_OF.values() for a in accounts})

pytestmark = pytest.mark.serial  # measures the budget's use over a minute, many processes


@pytest.fixture
def run_log(tmp_path: Path) -> Iterator[IO[bytes]]:
    """One log file for every process of the test."""
    log = (tmp_path / "lmsbridge.log").open("ab")
    yield log
    log.close()


async def first_request(stackone: StackOneStandIn, cluster: Cluster, timeout: float) -> float:
    """Wait for StackOne's first request; its moment (monotonic)."""
    deadline = time.monotonic() + timeout
    while not stackone.requests:
        cluster.alive()
        assert time.monotonic() < deadline, "no worker called StackOne"
        await asyncio.sleep(0.1)
    return time.monotonic()


@pytest.mark.postgres
async def test_receivers_and_workers_share_one_budget_and_write_everything_once(
    amqp_url: str, broker_prefix: str, stackone_spec: Path, pg_url: str, tmp_path: Path, run_log: IO[bytes]
) -> None:
    """2 ``serve`` + 3 ``worker`` processes on PostgreSQL, one worker SIGKILLed and restarted, one added:
    every record in the LMS exactly once, nothing lost or dead-lettered, 0 requests over the key's
    sliding-minute limit, and at least 95 % of it used in the busiest minute."""
    stackone = StackOneStandIn(api_key=STACKONE_KEY, spec_path=stackone_spec, rate_limit_per_minute=LIMIT, seed=5)
    await stackone.start()
    remember_accounts(broker_prefix, ACCOUNTS, sources=ACCOUNTS_OF)
    events = plan(EVENTS, seed=11, duplicate_share=0.05)
    user_ids = {(a, email): stackone.add_user(a, email) for a in ACCOUNTS for email in people(events)}
    config = tmp_path / "lmsbridge.toml"
    cluster = Cluster.configured(
        config,
        run_log,
        log_level="info",
        workers=3,
        receivers=2,
        amqp_url=amqp_url,
        database_url=pg_url,
        stackone_url=stackone.url,
        prefix=broker_prefix,
        accounts_of=ACCOUNTS_OF,
        rate_limit_per_minute=LIMIT,
    )
    timeline: list[str] = []
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            sender = Platform(cluster.url, session, rate=200.0, concurrency=32)
            sending = asyncio.create_task(sender.deliver_all(events, deadline=time.monotonic() + 120))
            try:
                t0 = await first_request(stackone, cluster, 60.0)
                await asyncio.sleep(15.0)
                await cluster.kill_worker(0)
                timeline.append(f"{time.monotonic() - t0:.1f}s worker 0 SIGKILLed and started again")
                await asyncio.sleep(15.0)
                cluster.add_worker()
                timeline.append(f"{time.monotonic() - t0:.1f}s a fourth worker joined")
                await sending
            finally:
                if not sending.done():
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sending
            rows = await quiet(stackone, pg_url, amqp_url, broker_prefix, cluster, timeout=240, accounts_of=ACCOUNTS_OF)
        await cluster.stop()
        status = await status_json(config)
    finally:
        await cluster.stop()
        await stackone.close()
    dead = await DeadLetters(amqp_url, broker_prefix).list(limit=100_000)
    records = await records_by_id(pg_url)
    ledger = draw_up(events, sender, stackone, user_ids, dead, records, rows, ACCOUNTS_OF)
    wanted = {w for p in events for w in expected_writes(p, user_ids, ACCOUNTS_OF)}
    busiest = stackone.busiest_window(60.0)
    print(ledger.show("scale-out", 0.0))
    print(
        f"requests {len(stackone.requests)}, writes wanted {len(wanted)}, busiest minute {busiest} of {LIMIT} "
        f"({busiest / LIMIT:.1%}), 429s {stackone.rate_limited}; {'; '.join(timeline)}"
    )

    assert ledger.accepted == ledger.sent
    assert ledger.lost == 0, ledger.lost_examples[:5]
    assert ledger.duplicates == 0, ledger.duplicate_examples[:5]
    assert ledger.phantoms == 0
    assert ledger.in_lms == ledger.accepted, (ledger.dead_reasons, dead[:3])
    assert stackone.violations == []
    assert stackone.rate_limited == 0, "the workers together went over the key's limit"
    assert busiest >= 0.95 * LIMIT, f"the busiest minute used {busiest} of {LIMIT}"
    assert ("worker 0 (SIGKILL)", -9) in cluster.exit_codes

    # ``lmsbridge status`` adds up every process's counters: the receivers' accepted events are every
    # 202 the platform saw. The killed worker took its last seconds of counts with it (what it had
    # stored but not acked is counted once, by the worker that acked it): status says the identity is
    # unchecked, names the process, and the remainder is within those seconds' worth.
    system = status["system_ledger"]
    print(f"status: {system}")
    assert system["accepted"] + system["deduplicated_at_receiver"] == ledger.statuses[202]
    assert len(system["processes_lost"]) == 1, "the SIGKILLed worker took its last counts with it"
    assert system["identity"].startswith("unchecked")
    assert abs(system["in_flight"]) <= 300
    assert system["broker_ready"] == 0
    assert len(status["rate_budget"]["holders"]) >= 4, status["rate_budget"]


async def status_json(config: Path) -> dict[str, Any]:
    """What ``lmsbridge status --json`` prints for ``config``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lmsbridge.cli",
        "--config",
        str(config),
        "status",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("LMSBRIDGE_")},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    data: dict[str, Any] = orjson.loads(out)
    return data


async def test_two_workers_on_one_sqlite_file_and_the_ledger_adds_up(
    amqp_url: str, broker_prefix: str, stackone_spec: Path, tmp_path: Path, run_log: IO[bytes]
) -> None:
    """One host: a receiver and two workers on one SQLite file share the budget through it; after a clean
    stop ``lmsbridge status`` adds every process's counters into a ledger whose identity holds exactly:
    accepted = upserted + duplicate (+ 0 dead-lettered, 0 in flight), with every event upserted once."""
    stackone = StackOneStandIn(api_key=STACKONE_KEY, spec_path=stackone_spec, rate_limit_per_minute=3000, seed=6)
    await stackone.start()
    remember_accounts(broker_prefix, ACCOUNTS, sources=ACCOUNTS_OF)
    events = plan(150, seed=12, duplicate_share=0.1)
    user_ids = {(a, email): stackone.add_user(a, email) for a in ACCOUNTS for email in people(events)}
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'lmsbridge.db'}"
    config = tmp_path / "lmsbridge.toml"
    cluster = Cluster.configured(
        config,
        run_log,
        log_level="info",
        workers=2,
        amqp_url=amqp_url,
        database_url=database_url,
        stackone_url=stackone.url,
        prefix=broker_prefix,
        accounts_of=ACCOUNTS_OF,
        rate_limit_per_minute=3000,
    )
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            sender = Platform(cluster.url, session, rate=100.0, concurrency=16)
            await sender.deliver_all(events, deadline=time.monotonic() + 120)
        rows = await quiet(
            stackone, database_url, amqp_url, broker_prefix, cluster, timeout=120, accounts_of=ACCOUNTS_OF
        )
        await cluster.stop()
        status = await status_json(config)
    finally:
        await cluster.stop()
        await stackone.close()
    dead = await DeadLetters(amqp_url, broker_prefix).list(limit=10_000)
    ledger = draw_up(events, sender, stackone, user_ids, dead, await records_by_id(database_url), rows, ACCOUNTS_OF)
    assert (ledger.lost, ledger.duplicates, ledger.phantoms, ledger.in_lms) == (0, 0, 0, ledger.sent)
    assert stackone.rate_limited == 0
    system = status["system_ledger"]
    assert system["identity"] == "holds", system
    assert system["accepted"] + system["deduplicated_at_receiver"] == ledger.statuses[202]
    assert system["upserted"] == ledger.sent
    assert system["accepted"] == system["upserted"] + system["duplicate"]
    assert (system["in_flight"], system["dead_lettered"], system["processes_lost"]) == (0, 0, [])
