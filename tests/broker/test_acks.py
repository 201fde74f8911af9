"""Acks in groups (``broker.ack_linger``), against the real RabbitMQ: never past an unfinished delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from lmsbridge.broker.acks import AckGroups

pytestmark = pytest.mark.usefixtures("steady_gc")  # the window is timed in this process

WINDOW = 0.2


@pytest.fixture
async def queue_name(amqp_url: str, broker_prefix: str) -> AsyncIterator[str]:
    """A quorum queue holding messages "0".."9", deleted afterwards."""
    name = f"{broker_prefix}.acks"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        for i in range(10):
            await channel.default_exchange.publish(
                aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name
            )
    yield name
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def deliveries(
    amqp_url: str, queue_name: str, groups: AckGroups
) -> tuple[aio_pika.abc.AbstractConnection, dict[str, AbstractIncomingMessage]]:
    """A consumer (prefetch 10) that registers each delivery with ``groups``; its connection and what arrived."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    queue = await channel.get_queue(queue_name)
    arrived: dict[str, AbstractIncomingMessage] = {}

    async def on_message(message: AbstractIncomingMessage) -> None:
        groups.arrived(message)
        arrived[message.body.decode()] = message

    await queue.consume(on_message)
    deadline = time.monotonic() + 10
    while len(arrived) < 10:
        assert time.monotonic() < deadline, f"only {sorted(arrived)} arrived"
        await asyncio.sleep(0.01)
    return connection, arrived


async def redelivered(amqp_url: str, queue_name: str) -> list[str]:
    """What the queue still holds (unacked messages come back once their consumer is gone)."""
    connection = await aio_pika.connect(amqp_url)
    bodies: list[str] = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            bodies.append(message.body.decode())
            await message.ack()
    return sorted(bodies)


async def test_a_group_never_acks_past_a_message_still_being_handled(amqp_url: str, queue_name: str) -> None:
    """Ten deliveries, nine settled and "3" still being handled when the consumer goes away: the
    nine acks all return within about one window (the six behind "3" are not held up by it), and
    only "3" comes back; a grouped ack reaching past it would have lost it."""
    groups = AckGroups(WINDOW)
    connection, arrived = await deliveries(amqp_url, queue_name, groups)
    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(groups.ack(arrived[str(i)]) for i in range(10) if i != 3)), timeout=3 * WINDOW
    )
    took = time.perf_counter() - started
    await connection.close()
    assert WINDOW * 0.9 <= took < 2 * WINDOW
    assert await redelivered(amqp_url, queue_name) == ["3"]


async def test_a_nacked_delivery_does_not_stop_the_group_behind_it(amqp_url: str, queue_name: str) -> None:
    """ "0" nacked back to the queue and forgotten, the other nine settled: all nine are acked within
    the window and none comes back but "0", which RabbitMQ took back."""
    groups = AckGroups(WINDOW)
    connection, arrived = await deliveries(amqp_url, queue_name, groups)
    await arrived["0"].nack(requeue=True)
    groups.nacked(arrived["0"])
    await asyncio.wait_for(asyncio.gather(*(groups.ack(arrived[str(i)]) for i in range(1, 10))), timeout=3 * WINDOW)
    await connection.close()
    assert await redelivered(amqp_url, queue_name) == ["0"]


async def test_without_a_window_each_ack_goes_at_once(amqp_url: str, queue_name: str) -> None:
    """``ack_linger`` 0: an ack returns without waiting for a window, and the message is gone."""
    groups = AckGroups(0.0)
    connection, arrived = await deliveries(amqp_url, queue_name, groups)
    started = time.perf_counter()
    for i in range(10):
        await groups.ack(arrived[str(i)])
    took = time.perf_counter() - started
    await connection.close()
    assert took < 0.5
    assert await redelivered(amqp_url, queue_name) == []
