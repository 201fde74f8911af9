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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiormq
import uvloop
from bench_receiver import AMQP, cpu_seconds, quiet_broker, rabbitmq_pid
from pamqp.commands import Basic
from rich.console import Console
from rich.table import Table

PROPERTIES = Basic.Properties(content_type="application/json", delivery_mode=2)
BODY = b"x" * 600  # about an event's JSON


async def publish_paced(
    channel: aiormq.abc.AbstractChannel, queue: str, rate: float, group: int, seconds: float
) -> int:
    """Publish ``group`` messages together every ``group / rate`` s for ``seconds``; how many (all confirmed)."""
    pending: set[asyncio.Future[Any]] = set()
    started, sent = time.perf_counter(), 0
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
    return sent


async def one_case(broker: int, rate: float, group: int, seconds: float) -> tuple[float, float]:
    """(messages a second reached, RabbitMQ's CPU a message in us) for ``group`` messages at a time."""
    connection = await aiormq.connect(AMQP)
    channel = await connection.channel(publisher_confirms=True)
    queue = f"bench-groups-{uuid.uuid4().hex[:6]}"
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    quiet_broker()
    cpu, started = cpu_seconds(broker), time.perf_counter()
    sent = await publish_paced(channel, queue, rate, group, seconds)
    used, elapsed = cpu_seconds(broker) - cpu, time.perf_counter() - started
    await channel.queue_delete(queue)
    await connection.close()
    return sent / elapsed, 1e6 * used / sent


Case = TypeVar("Case")


async def in_turn(
    name: str, cases: list[Case], rounds: int, run: Callable[[int, Case], Awaitable[tuple[float, float]]]
) -> dict[Case, list[tuple[float, float]]] | None:
    """Each case ``rounds`` times, in turn, given RabbitMQ's pid; None (said on stderr) if it is not on this machine."""
    broker = rabbitmq_pid()
    if broker is None:
        print(f"{name}: RabbitMQ (beam.smp) must run on this machine", file=sys.stderr)
        return None
    results: dict[Case, list[tuple[float, float]]] = {c: [] for c in cases}
    for _ in range(rounds):
        for case in cases:
            results[case].append(await run(broker, case))
    return results


def runs(results: list[tuple[float, float]]) -> tuple[str, str]:
    """The runs' rates and CPU costs, each column as ``a / b / c``."""
    return " / ".join(f"{reached:,.0f}" for reached, _ in results), " / ".join(f"{cost:.0f}" for _, cost in results)


def case_parser(description: str, rounds: int) -> argparse.ArgumentParser:
    """The options every case-in-turn benchmark takes: ``--rate``, ``--seconds`` and ``--rounds``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=rounds, help="each case this many times, in turn")
    return parser


def print_cases(
    title: str,
    columns: Sequence[str],
    results: dict[Case, list[tuple[float, float]]],
    label: Callable[[Case], Sequence[str]],
) -> None:
    """One row a case: its ``label`` cells, then its runs' rates and CPU costs (:func:`runs`)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    for case, done in results.items():
        table.add_row(*label(case), *runs(done))
    Console().print(table)


async def main() -> int:
    parser = case_parser(__doc__.splitlines()[0], rounds=2)
    parser.add_argument("--groups", default="1,4,16", help="messages sent together, comma-separated")
    args = parser.parse_args()
    groups = [int(g) for g in args.groups.split(",")]
    results = await in_turn(
        "bench_publish_groups", groups, args.rounds, lambda broker, g: one_case(broker, args.rate, g, args.seconds)
    )
    if results is None:
        return 2
    print_cases(
        f"RabbitMQ's CPU per confirmed message at {args.rate:,.0f}/s (quorum queue)",
        ("sent together", "every (ms)", "messages/s reached", "RabbitMQ CPU us a message"),
        results,
        lambda group: (str(group), f"{1000 * group / args.rate:.1f}"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
