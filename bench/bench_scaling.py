"""Scale-out benchmark (issue 14): one StackOne budget shared by 1, 2 and 3 workers on PostgreSQL.

Phases (lmsbridge as real processes: one ``serve``, N ``worker``; the StackOne stand-in and the
platform sending signed webhooks run in this process; a fresh PostgreSQL database per row):

- budget: the stand-in enforces ``--limit`` requests per sliding minute for the API key (600 by
  default) and lmsbridge is told the same limit, nothing per process. A backlog of about 90 s of
  the budget; the row is the busiest sliding minute the stand-in admitted / the limit (target
  >= 95 %) and the 429s it had to send (target 0). ``--lease`` is ``worker.sync_lease_seconds``
  (120 as in production; the fault tests use 15, shorter than a sync's wait for the budget here).
- throughput: no rate limit, the stand-in answers every call after 20 ms; ``--events`` events,
  each a new record on one account (one StackOne write each, after the first lookups); the row
  is LMS writes per second between the first and the last write.

    .venv/bin/python bench/bench_scaling.py [--phases budget,throughput] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test harness (tests/faults) drives the processes

from tests.faults.conftest import (
    PARTNERS,
    SALES,
    STACKONE_KEY,
    Cluster,
    Platform,
    people,
    plan,
    quiet,
)

from lmsbridge.testing.stackone import StackOneStandIn

AMQP = os.environ.get("LMSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("LMSBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ACCOUNTS_OF = {SALES: ["acc-east"], PARTNERS: ["acc-west"]}
ACCOUNTS = ["acc-east", "acc-west"]


@dataclass
class Row:
    """One configuration's figures."""

    phase: str
    workers: int
    events: int
    requests: int
    seconds: float
    busiest: int = 0
    limit: int = 0
    rate_limited: int = 0
    writes: int = 0


async def fresh_database() -> tuple[str, str]:
    """A new PostgreSQL database: (its asyncpg URL for lmsbridge, its name)."""
    name = f"lmsbridge_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://{urlsplit(PG).netloc}/{name}", name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def delete_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for suffix in ["events", "dead", *[f"delay.{i}" for i in range(8)]]:
            await channel.queue_delete(f"{prefix}.{suffix}")
        for account in ACCOUNTS:
            await channel.queue_delete(f"{prefix}.sync.{account}")
        for source in ACCOUNTS_OF:
            await channel.queue_delete(f"{prefix}.events.{source}")
        for exchange in (prefix, f"{prefix}.delay", f"{prefix}.dead"):
            await channel.exchange_delete(exchange)


async def one_run(
    phase: str,
    workers: int,
    events: int,
    *,
    limit: int | None,
    latency: float,
    work: Path,
    log_level: str = "warning",
    lease: float = 120.0,
) -> Row:
    """Send ``events`` through 1 serve + ``workers`` workers on a fresh database; the row."""
    stackone = StackOneStandIn(api_key=STACKONE_KEY, rate_limit_per_minute=limit, seed=workers)
    if latency:
        stackone.set_fault_rates(slow=1.0, slow_seconds=latency)
    await stackone.start()
    planned = [p for p in plan(events, seed=workers, duplicate_share=0.0) if not p.duplicate]
    for account in ACCOUNTS:
        for email in people(planned):
            stackone.add_user(account, email)
    database, name = await fresh_database()
    prefix = f"bs{uuid.uuid4().hex[:8]}"
    config = work / f"{phase}-{workers}.toml"
    with (work / f"{phase}-{workers}.log").open("ab") as log:
        cluster = Cluster.configured(
            config,
            log,
            log_level=log_level,
            workers=workers,
            amqp_url=AMQP,
            database_url=database,
            stackone_url=stackone.url,
            prefix=prefix,
            accounts_of=ACCOUNTS_OF,
            rate_limit_per_minute=limit or 10_000_000,
            lease_seconds=lease,
        )
        try:
            await cluster.start()
            async with aiohttp.ClientSession() as session:
                sender = Platform(cluster.url, session, rate=400.0, concurrency=64)
                await sender.deliver_all(planned, deadline=time.monotonic() + 600)
            await quiet(stackone, database, AMQP, prefix, cluster, timeout=900, accounts_of=ACCOUNTS_OF)
        finally:
            await cluster.stop()
            await stackone.close()
            await drop_database(name)
            await delete_queues(prefix)
    calls = Counter(f"{r.method} {_shape(r.path)} {r.status}" for r in stackone.requests)
    print(f"{phase} x{workers}: StackOne calls {dict(calls.most_common())}", flush=True)
    writes = [r.time for r in stackone.requests if r.method == "POST" and 200 <= r.status < 300]
    seconds = (max(writes) - min(writes)) if len(writes) > 1 else 0.0
    return Row(
        phase,
        workers,
        len(planned),
        len(stackone.requests),
        seconds,
        busiest=stackone.busiest_window(60.0),
        limit=limit or 0,
        rate_limited=stackone.rate_limited,
        writes=len(writes),
    )


def _shape(path: str) -> str:
    """``/unified/lms/users/{id}/assignments`` for any user id."""
    parts = path.split("/")
    if len(parts) > 4 and parts[3] == "users":
        parts[4] = "{id}"
    return "/".join(parts[:6])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="budget,throughput")
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--limit", type=int, default=600, help="requests per minute in the budget phase")
    parser.add_argument("--events", type=int, default=6000, help="events in the throughput phase")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs (info level) in this folder")
    parser.add_argument(
        "--lease", type=float, default=120.0, help="worker.sync_lease_seconds (the default: 120; the fault tests: 15)"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lmsbridge-scaling-") as tmp:
        work = args.logs or Path(tmp)
        level = "info" if args.logs else "warning"
        for phase in args.phases.split(","):
            for workers in counts:
                if phase == "budget":
                    # About 1.1 requests per event once people are known: ~90 s of the budget.
                    n = int(args.limit * 1.5 / 1.1)
                    row = await one_run(
                        phase, workers, n, limit=args.limit, latency=0.0, work=work, log_level=level, lease=args.lease
                    )
                else:
                    row = await one_run(
                        phase, workers, args.events, limit=None, latency=0.02, work=work, log_level=level
                    )
                rows.append(row)
                print(row, flush=True)
    table = Table(title="lmsbridge scale-out (1 serve + N workers on PostgreSQL)")
    for column in ("phase", "workers", "events", "StackOne requests", "busiest minute / limit", "429s", "writes/s"):
        table.add_column(column, justify="right")
    for r in rows:
        use = f"{r.busiest} / {r.limit} ({r.busiest / r.limit:.1%})" if r.limit else "-"
        rate = f"{r.writes / r.seconds:.0f}" if r.seconds else "-"
        table.add_row(r.phase, str(r.workers), str(r.events), str(r.requests), use, str(r.rate_limited), rate)
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
