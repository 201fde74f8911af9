"""RabbitMQ's CPU per message consumed from a quorum queue, acked one at a time or in groups.

The measurement behind the worker's grouped acks (``broker.ack_linger``, issue 15). Each case
publishes with confirms at ``--rate`` messages a second (4 at a time, as the receiver's publish
window sends them) to a fresh quorum queue while one consumer (prefetch 64) takes them as they
come, for ``--seconds``; the consumer acks each delivery at once, or, with a window, acks the
highest tag delivered so far with ``multiple=True`` every ``window`` ms. The row is RabbitMQ's CPU
a message (publish, delivery and ack together), read from /proc (the broker must run on this
machine). Here every message is handled the moment it arrives, so every tag up to the highest is
done; the worker finishes messages out of order and acks in one frame only the run of finished
ones at the head (src/lmsbridge/broker/acks.py).

    .venv/bin/python bench/bench_ack_groups.py [--rate 800] [--windows 0,5,20] [--seconds 8]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid

import aiormq
import uvloop
from bench_publish_groups import case_parser, in_turn, print_cases, publish_paced
from bench_receiver import AMQP, cpu_seconds, quiet_broker

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

    consumer = await consuming.basic_consume(queue, on_message)
    grouping = asyncio.create_task(ack_in_groups()) if window_ms > 0 else None
    quiet_broker()
    cpu, started = cpu_seconds(broker), time.perf_counter()
    sent = await publish_paced(publishing, queue, rate, PUBLISHED_TOGETHER, seconds)
    while received < sent or (grouping is not None and acked < highest):
        await asyncio.sleep(0.005)
    used, elapsed = cpu_seconds(broker) - cpu, time.perf_counter() - started
    if grouping is not None:
        grouping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await grouping
    await consuming.basic_cancel(consumer.consumer_tag or "")
    await publishing.queue_delete(queue)
    await connection.close()
    return received / elapsed, 1e6 * used / sent


async def main() -> int:
    parser = case_parser(__doc__.splitlines()[0], rounds=3)
    parser.add_argument("--windows", default="0,5,20", help="ms between grouped acks, comma-separated; 0 acks each")
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",")]
    results = await in_turn(
        "bench_ack_groups", windows, args.rounds, lambda broker, w: one_case(broker, args.rate, w, args.seconds)
    )
    if results is None:
        return 2
    print_cases(
        f"RabbitMQ's CPU per message published and consumed at {args.rate:,.0f}/s (quorum queue)",
        ("acks", "messages/s consumed", "RabbitMQ CPU us a message"),
        results,
        lambda window: ("each on its own" if window <= 0 else f"grouped every {window:g} ms",),
    )
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
