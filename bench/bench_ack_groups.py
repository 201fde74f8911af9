"""RabbitMQ's CPU per message consumed from a quorum queue, acked one at a time or in groups.

A lead for the worker (issue 15), measured and not built: lmsbridge acks each message on its own.
Each case publishes with confirms at ``--rate`` messages a second (4 at a time, as the receiver's
publish window sends them) to a fresh quorum queue while one consumer (prefetch 64) takes them as
they come, for ``--seconds``; the consumer acks each delivery at once, or, with a window, acks the
highest tag delivered so far with ``multiple=True`` every ``window`` ms. The row is RabbitMQ's CPU
a message (publish, delivery and ack together), read from /proc (the broker must run on this
machine). Here every message is handled the moment it arrives, so every tag up to the highest is
done; a worker finishes messages out of order and could ack in one frame only a run of finished
ones.

    .venv/bin/python bench/bench_ack_groups.py [--rate 800] [--windows 0,5,20] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
PUBLISHED_TOGETHER = 4


async def one_case(broker: int, rate: float, window_ms: float, seconds: float) -> tuple[float, float]:
    """(messages a second consumed, RabbitMQ's CPU a message in us); ``window_ms`` 0 acks one at a time."""
    connection = await aiormq.connect(AMQP)
    publishing = await connection.channel(publisher_confirms=True)
    consuming = await connection.channel()
    queue = f"bench-acks-{uuid.uuid4().hex[:6]}"
    await publishing.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    await consuming.basic_qos(prefetch_count=64)
    received = highest = acked = 0

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        nonlocal received, highest
        received += 1
        tag = message.delivery_tag or 0
        if window_ms <= 0:
            await consuming.basic_ack(tag)
        else:
            highest = max(highest, tag)

    async def ack_in_groups() -> None:
        nonlocal acked
        while True:
            await asyncio.sleep(window_ms / 1000)
            if highest > acked:
                acked = highest
                await consuming.basic_ack(acked, multiple=True)

    await consuming.basic_consume(queue, on_message)
    grouping = asyncio.create_task(ack_in_groups()) if window_ms > 0 else None
    pending: set[asyncio.Future[Any]] = set()
    quiet_broker()
    cpu, started, sent = cpu_seconds(broker), time.perf_counter(), 0
    due = started
    while time.perf_counter() - started < seconds:
        for _ in range(PUBLISHED_TOGETHER):
            publish = asyncio.ensure_future(
                publishing.basic_publish(BODY, routing_key=queue, properties=PROPERTIES, mandatory=True)
            )
            pending.add(publish)
            publish.add_done_callback(pending.discard)
            sent += 1
        due += PUBLISHED_TOGETHER / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    await asyncio.gather(*pending)
    while received < sent or (grouping is not None and acked < highest):
        await asyncio.sleep(0.005)
    used, elapsed = cpu_seconds(broker) - cpu, time.perf_counter() - started
    if grouping is not None:
        grouping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await grouping
    await publishing.queue_delete(queue)
    await connection.close()
    return received / elapsed, 1e6 * used / sent


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--windows", default="0,5,20", help="ms between grouped acks, comma-separated; 0 acks each")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3, help="each window this many times, in turn")
    args = parser.parse_args()
    broker = rabbitmq_pid()
    if broker is None:
        print("bench_ack_groups: RabbitMQ (beam.smp) must run on this machine", file=sys.stderr)
        return 2
    windows = [float(w) for w in args.windows.split(",")]
    results: dict[float, list[tuple[float, float]]] = {w: [] for w in windows}
    for _ in range(args.rounds):
        for window in windows:
            results[window].append(await one_case(broker, args.rate, window, args.seconds))
    table = Table(title=f"RabbitMQ's CPU per message published and consumed at {args.rate:,.0f}/s (quorum queue)")
    for column in ("acks", "messages/s consumed", "RabbitMQ CPU us a message"):
        table.add_column(column, justify="right")
    for window, runs in results.items():
        table.add_row(
            "each on its own" if window <= 0 else f"grouped every {window:g} ms",
            " / ".join(f"{reached:,.0f}" for reached, _ in runs),
            " / ".join(f"{cost:.0f}" for _, cost in runs),
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
