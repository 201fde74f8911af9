"""Recovery benchmark: webhook -> LMS time for every record while StackOne misbehaves (issue 11).

Two mixes, each a fresh lmsbridge (receiver + worker in this process, a SQLite file, the real
RabbitMQ) against the StackOne stand-in, with the DEFAULT retry settings (backoff from 1 s
with full jitter, capped at 300 s, delay queues [1, 5, 30, 120, 600, 1800] s, a 120 s lease):

- ``500+429``: 30 % of writes answered 500, 15 % of all calls answered 429 (Retry-After: 1,
  which pauses the whole API key for a second);
- ``408``: 30 % of creates written by StackOne and then answered 408.

``--people`` people each get an ``assignment.created`` then an ``assignment.completed`` webhook,
``--rate`` people per second. A record is an assignment or a completion; its time runs from
its webhook's 202 to the stand-in receiving the create that landed. The table gives p50, p99
and max (targets: max <= 60 s, p99 <= 30 s), duplicates and dead letters (both must be 0).

    .venv/bin/python bench/bench_recovery.py [--people 60] [--rate 1.0] [--mixes 500+429,408]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import structlog
from rich.console import Console
from rich.table import Table

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.broker.topology import Names
from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings, load_settings
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event

AMQP = os.environ.get("LMSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "bench-recovery-key"
ACCOUNT = "acc-bench"
SOURCE = "acme-sales"
MIXES: dict[str, dict[str, Any]] = {
    "500+429": {"write_5xx": 0.30, "burst_429": 0.15, "retry_after": 1},
    "408": {"create_408": 0.30},
}

console = Console(width=150)


def settings_for(stackone: StackOneStandIn, database: Path, prefix: str) -> Settings:
    """Default retry settings; only ports, names and the rate limit (6,000/min) are the bench's."""
    return load_settings(
        amqp_url=AMQP,
        database_url=f"sqlite+aiosqlite:///{database}",
        receiver={"host": "127.0.0.1", "port": 0},
        stackone={"base_url": stackone.url, "api_key": KEY, "rate_limit_per_minute": 6000},
        broker={"prefix": prefix},
        worker={"metrics_port": 0},
        sources={SOURCE: {"platform": "exec", "secrets": [SECRET], "accounts": [ACCOUNT]}},
    )


async def cleanup(settings: Settings) -> None:
    """Delete the run's queues and exchanges."""
    names = Names(settings.broker.prefix)
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for queue in names.queues([SOURCE], [ACCOUNT], len(settings.broker.retry_delays)):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.delay_exchange, names.dead_exchange):
            await channel.exchange_delete(exchange)


async def post(sender: WebhookSender, kind: str, email: str) -> float:
    """Send one webhook until it is accepted; returns when the 202 came."""
    completed = kind == "assignment.completed"
    assignment = exec_assignment(
        f"as-{email}",
        email,
        status="completed" if completed else "not_started",
        best_score=90.0 if completed else None,
    )
    envelope = exec_event(kind, assignment)
    while True:
        status, _ = await sender.post(SOURCE, envelope)
        if status == 202:
            return time.perf_counter()
        await asyncio.sleep(0.5)


async def run_mix(name: str, people: int, rate: float, workdir: Path) -> dict[str, Any]:
    """One mix: send every person's two webhooks at ``rate`` people/s, wait until all landed, measure."""
    stackone = StackOneStandIn(api_key=KEY, seed=11)
    await stackone.start()
    emails = [f"p{i:04d}@acme.example" for i in range(people)]
    ids = {email: stackone.add_user(ACCOUNT, email) for email in emails}
    settings = settings_for(stackone, workdir / f"{name.replace('+', '-')}.db", f"bench-rec-{uuid.uuid4().hex[:6]}")
    runtime = Runtime(settings, receiver=True, worker=True)
    sent: dict[tuple[str, str], float] = {}
    started = time.perf_counter()
    try:
        await runtime.start(wait=10)
        stackone.set_fault_rates(**MIXES[name])
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)

            async def person(index: int, email: str) -> None:
                await asyncio.sleep(index / rate)
                sent[("assignment", email)] = await post(sender, "assignment.created", email)
                sent[("completion", email)] = await post(sender, "assignment.completed", email)

            await asyncio.gather(*(person(i, e) for i, e in enumerate(emails)))
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if (
                len({c["user_id"] for c in stackone.completions()}) == people
                and len({a["user_id"] for a in stackone.assignments()}) == people
            ):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # anything written twice would show by now
        stackone.set_fault_rates()
        dead = len(await DeadLetters(AMQP, settings.broker.prefix).list())
    finally:
        await runtime.stop()
        await stackone.close()
        with contextlib.suppress(Exception):
            await cleanup(settings)
    landed: dict[tuple[str, str], float] = {}
    by_user = {uid: email for email, uid in ids.items()}
    writes: Counter[tuple[str, str]] = Counter()
    for kind, rows in (("assignment", stackone.assignments()), ("completion", stackone.completions())):
        for row in rows:
            key = (kind, by_user[row["user_id"]])
            writes[key] += 1
            landed.setdefault(key, row["received"])
    times = sorted(landed[k] - sent[k] for k in sent if k in landed)
    statuses = Counter(r.status for r in stackone.requests)
    return {
        "mix": name,
        "records": len(sent),
        "landed": len(times),
        "p50": statistics.median(times) if times else None,
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))] if times else None,
        "max": times[-1] if times else None,
        "duplicates": sum(n - 1 for n in writes.values()),
        "dead": dead,
        "calls": len(stackone.requests),
        "faults": f"{statuses.get(500, 0)}x500 {statuses.get(429, 0)}x429 {statuses.get(408, 0)}x408",
        "seconds": time.perf_counter() - started,
    }


def table(rows: list[dict[str, Any]], people: int, rate: float) -> Table:
    """The results, one row per mix."""
    out = Table(title=f"webhook -> LMS under StackOne faults ({people} people x 2 records, {rate}/s)")
    for column in ("mix", "records", "landed", "p50 s", "p99 s", "max s", "dup", "dead", "calls", "faults", "run s"):
        out.add_column(column, justify="left" if column in ("mix", "faults") else "right")
    for r in rows:
        out.add_row(
            r["mix"],
            str(r["records"]),
            str(r["landed"]),
            *(f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("p50", "p99", "max")),
            str(r["duplicates"]),
            str(r["dead"]),
            str(r["calls"]),
            r["faults"],
            f"{r['seconds']:.0f}",
        )
    return out


async def main_async(args: argparse.Namespace) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.mixes.split(","):
            console.print(f"running mix {name} ...")
            rows.append(await run_mix(name, args.people, args.rate, Path(tmp)))
    console.print(table(rows, args.people, args.rate))
    ok = all(
        r["landed"] == r["records"] and r["duplicates"] == 0 and r["dead"] == 0 and (r["max"] or 0) <= 60 for r in rows
    )
    console.print("targets met" if ok else "TARGETS MISSED (max <= 60 s, all landed once, no dead letters)")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--rate", type=float, default=1.0, help="people per second (two webhooks each)")
    parser.add_argument("--mixes", default=",".join(MIXES))
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
