"""RabbitMQ's CPU per confirmed message at one rate, messages sent one at a time or in groups.

Why `broker.publish_linger` exists: a quorum queue pays mostly per arrival (a socket read, a Raft
append, a log write, a confirm), so at a moderate rate the same messages cost it about half as
much when they arrive a few at a time. Each case publishes with confirms through aiormq
(mandatory, persistent) to a fresh quorum queue for ``--seconds``, at ``--rate`` messages a second,
``group`` of them sent together every ``group / rate`` seconds, and reads RabbitMQ's CPU from
/proc (the broker must run on this machine).

    .venv/bin/python bench/bench_publish_groups.py [--rate 800] [--groups 1,4,16] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

import aiormq
import uvloop
from bench_receiver import AMQP, cpu_seconds, quiet_broker, rabbitmq_pid
from pamqp.commands import Basic
from rich.console import Console
from rich.table import Table

PROPERTIES = Basic.Properties(content_type="application/json", delivery_mode=2)
BODY = b"x" * 600  # about an event's JSON


async def one_case(broker: int, rate: float, group: int, seconds: float) -> tuple[float, float]:
    """(messages a second reached, RabbitMQ's CPU a message in us) for ``group`` messages at a time."""
    connection = await aiormq.connect(AMQP)
    channel = await connection.channel(publisher_confirms=True)
    queue = f"bench-groups-{uuid.uuid4().hex[:6]}"
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    pending: set[asyncio.Future[Any]] = set()
    quiet_broker()
    cpu, started, sent = cpu_seconds(broker), time.perf_counter(), 0
    due = started
    while time.perf_counter() - started < seconds:
        for _ in range(group):
            publish = asyncio.ensure_future(
                channel.basic_publish(BODY, routing_key=queue, properties=PROPERTIES, mandatory=True)
            )
            pending.add(publish)
            publish.add_done_callback(pending.discard)
            sent += 1
        due += group / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    await asyncio.gather(*pending)
    used, elapsed = cpu_seconds(broker) - cpu, time.perf_counter() - started
    await channel.queue_delete(queue)
    await connection.close()
    return sent / elapsed, 1e6 * used / sent


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--groups", default="1,4,16", help="messages sent together, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="each group size this many times, in turn")
    args = parser.parse_args()
    broker = rabbitmq_pid()
    if broker is None:
        print("bench_publish_groups: RabbitMQ (beam.smp) must run on this machine", file=sys.stderr)
        return 2
    groups = [int(g) for g in args.groups.split(",")]
    results: dict[int, list[tuple[float, float]]] = {g: [] for g in groups}
    for _ in range(args.rounds):
        for group in groups:
            results[group].append(await one_case(broker, args.rate, group, args.seconds))
    table = Table(title=f"RabbitMQ's CPU per confirmed message at {args.rate:,.0f}/s (quorum queue)")
    for column in ("sent together", "every (ms)", "messages/s reached", "RabbitMQ CPU us a message"):
        table.add_column(column, justify="right")
    for group, runs in results.items():
        table.add_row(
            str(group),
            f"{1000 * group / args.rate:.1f}",
            " / ".join(f"{reached:,.0f}" for reached, _ in runs),
            " / ".join(f"{cost:.0f}" for _, cost in runs),
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
