"""The broker edge against the real RabbitMQ: confirms, routing, delayed retries, dead letters."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from structlog.testing import capture_logs

from lmsbridge.broker import Broker, Names
from lmsbridge.broker import connection as connection_module
from lmsbridge.broker.codec import SyncTask, decode
from lmsbridge.broker.dead import DeadLetters
from lmsbridge.broker.topology import EVENTS_KEY
from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.errors import BrokerUnavailable
from lmsbridge.settings import BrokerSettings
from tests.conftest import remember_accounts

NOW = datetime(2026, 5, 29, 8, tzinfo=UTC)


def sample_event(message_id: str = "msg-1") -> AssignmentEvent:
    return AssignmentEvent(
        message_id=message_id,
        source="acme",
        platform="exec",
        type="assignment.created",
        occurred_at=NOW,
        received_at=NOW,
        correlation_id="corr-1",
        assignment_id="asg-1",
        learning_object=LearningObject(external_reference="exec:scenario:x", title="X"),
        people=(PersonProgress(email="jane@acme.example"),),
    )


@pytest.fixture
async def broker(amqp_url: str, broker_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A connected broker with the full topology under a unique prefix."""
    remember_accounts(broker_prefix, ["acc-1"])
    settings = BrokerSettings(prefix=broker_prefix, retry_delays=(0.3, 1.0))
    b = Broker(amqp_url, settings, ["acc-1"], name=request.node.name)
    await b.start(wait=10)
    yield b
    await b.close()


async def _get(amqp_url: str, queue_name: str, timeout: float = 5.0) -> aio_pika.abc.AbstractIncomingMessage:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                return message
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nothing arrived in {queue_name}")
            await asyncio.sleep(0.05)


async def test_published_event_is_persistent_and_decodes(broker: Broker, amqp_url: str, broker_prefix: str) -> None:
    """A confirmed event lands in the events queue as a persistent message that decodes back."""
    await broker.publish_event(sample_event(), timeout=5)
    message = await _get(amqp_url, Names(broker_prefix).events)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    task = decode(message)
    assert task.kind == "event"
    assert task.event == sample_event()
    assert task.correlation_id == "corr-1"


async def test_background_work_keeps_its_lane_through_the_broker_and_a_retry(
    broker: Broker, amqp_url: str, broker_prefix: str
) -> None:
    """A reconcile pass's event and sync task decode as background work, and so do the sync jobs
    the event starts and a retried copy; a webhook's event does not."""
    names = Names(broker_prefix)
    await broker.publish_event(sample_event("msg-bg"), timeout=5, background=True)
    await broker.publish_event(sample_event("msg-live"), timeout=5)
    first, second = decode(await _get(amqp_url, names.events)), decode(await _get(amqp_url, names.events))
    assert (first.message_id, first.background) == ("msg-bg", True)
    assert first.syncing(SyncTask(1, "acc-1")).background is True
    assert (second.message_id, second.background) == ("msg-live", False)
    await broker.publish_sync(SyncTask(8, "acc-1"), correlation_id="c", received_at=1.0, background=True)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.sync("acc-1"))
        held = await queue.get(no_ack=False, timeout=5)
        assert decode(held).background is True
        await broker.publish_retry(held, attempt=1, level=0)
        await held.ack()
    assert decode(await _get(amqp_url, names.sync("acc-1"), timeout=10)).background is True


async def _replace_events_queue(amqp_url: str, names: Names, arguments: dict[str, Any] | None) -> None:
    """Delete the events queue; with ``arguments``, declare a classic one in its place, bound as before."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(names.events)
        if arguments is not None:
            queue = await channel.declare_queue(names.events, durable=True, arguments=arguments)
            await queue.bind(names.exchange, routing_key=EVENTS_KEY)


async def test_an_unroutable_event_is_refused_not_confirmed(broker: Broker, amqp_url: str, broker_prefix: str) -> None:
    """With no queue bound to the event's key, RabbitMQ returns the (mandatory) message and
    publish_event raises BrokerUnavailable; the channel stays usable for the next event."""
    names = Names(broker_prefix)
    await _replace_events_queue(amqp_url, names, None)
    with pytest.raises(BrokerUnavailable, match="PublishError"):
        await broker.publish_event(sample_event(), timeout=5)
    await _replace_events_queue(amqp_url, names, {})
    await broker.publish_event(sample_event("msg-2"), timeout=5)
    assert decode(await _get(amqp_url, names.events)).message_id == "msg-2"


async def test_a_nacked_event_is_refused_not_confirmed(broker: Broker, amqp_url: str, broker_prefix: str) -> None:
    """A queue that refuses publishes (full, ``reject-publish``) makes RabbitMQ nack: BrokerUnavailable."""
    await _replace_events_queue(amqp_url, Names(broker_prefix), {"x-max-length": 0, "x-overflow": "reject-publish"})
    with pytest.raises(BrokerUnavailable, match="DeliveryError"):
        await broker.publish_event(sample_event(), timeout=5)


async def test_events_queue_is_a_quorum_queue_with_dead_lettering(
    amqp_url: str, broker: Broker, broker_prefix: str
) -> None:
    """Redeclaring the events queue as a classic queue fails: it is a quorum queue (RabbitMQ 3.10+)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(Names(broker_prefix).events, durable=True)


async def test_retry_returns_the_message_to_its_own_queue_after_the_delay(
    broker: Broker, amqp_url: str, broker_prefix: str
) -> None:
    """A retried sync message waits in a delay queue, then comes back to its account's queue."""
    names = Names(broker_prefix)
    await broker.publish_sync(SyncTask(7, "acc-1"), correlation_id="c", received_at=1.0)
    original = await _get(amqp_url, names.sync("acc-1"))
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.sync("acc-1"))
        await broker.publish_sync(SyncTask(7, "acc-1"), correlation_id="c", received_at=1.0)
        held = await queue.get(no_ack=False, timeout=5)
        started = asyncio.get_running_loop().time()
        await broker.publish_retry(held, attempt=3, level=0)
        await held.ack()
    back = await _get(amqp_url, names.sync("acc-1"), timeout=10)
    assert asyncio.get_running_loop().time() - started >= 0.25
    assert decode(back).attempt == 3
    assert decode(back).sync == decode(original).sync


async def test_a_redelivery_and_a_retry_each_count_as_a_try(broker: Broker, amqp_url: str, broker_prefix: str) -> None:
    """A message's tries (logged as ``attempt``) count what the retry policy does not: RabbitMQ
    redelivering it (a requeue, as after a broker fault) and a retry after an infrastructure fault,
    which keeps the policy's attempt at 0."""
    names = Names(broker_prefix)
    await broker.publish_sync(SyncTask(5, "acc-1"), correlation_id="c", received_at=1.0)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.sync("acc-1"))
        first = await queue.get(no_ack=False, timeout=5)
        assert (decode(first).attempt, decode(first).tries) == (0, 0)
        await first.nack(requeue=True)
        again = await queue.get(no_ack=False, timeout=5)
        assert (decode(again).attempt, decode(again).tries) == (0, 1)
        await broker.publish_retry(again, attempt=0, level=0)
        await again.ack()
    back = decode(await _get(amqp_url, names.sync("acc-1"), timeout=10))
    assert (back.attempt, back.tries) == (0, 2)


async def test_unreachable_broker_refuses_to_publish(broker_prefix: str) -> None:
    """With RabbitMQ unreachable, start(wait) and publish both raise BrokerUnavailable."""
    b = Broker("amqp://guest:guest@127.0.0.1:1/", BrokerSettings(prefix=broker_prefix), [], name="down")
    with pytest.raises(BrokerUnavailable):
        await b.start(wait=0.5)
    with pytest.raises(BrokerUnavailable):
        await b.publish_event(sample_event(), timeout=1)
    await b.close()


async def test_dead_letters_can_be_listed_shown_and_replayed(broker: Broker, amqp_url: str, broker_prefix: str) -> None:
    """A dead-lettered message keeps its reason, stays listed until replayed, then returns to its queue."""
    names = Names(broker_prefix)
    await broker.publish_sync(SyncTask(9, "acc-1"), correlation_id="c", received_at=1.0)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.sync("acc-1"))
        held = await queue.get(no_ack=False, timeout=5)
        await broker.publish_dead(held, reason="stackone_422", error="Unprocessable: bad due_date")
        await held.ack()
    dlq = DeadLetters(amqp_url, broker_prefix)
    [listed] = await dlq.list()
    assert (listed.message_id, listed.reason, listed.kind) == ("sync:9:acc-1", "stackone_422", "sync")
    assert len(await dlq.list()) == 1  # listing is not destructive
    shown = await dlq.show("sync:9:acc-1")
    assert shown is not None
    assert "bad due_date" in shown.error
    assert (await dlq.replay("sync:9:acc-1")).sent == 1
    assert await dlq.list() == []
    back = decode(await _get(amqp_url, names.sync("acc-1")))
    assert back.sync == SyncTask(9, "acc-1")
    assert back.attempt == 0


async def test_retrying_an_unreachable_broker_leaves_no_connection_open_behind(broker_prefix: str) -> None:
    """Each failed attempt to reach RabbitMQ closes its connection: after a broker that never connected
    is closed, none of its attempts' connections is still open. (Left open, the garbage collector
    finalises them from whatever thread it runs in, and off the event loop their own close becomes a
    coroutine never awaited: the warning a CI run failed on.)"""

    def open_connections() -> set[int]:
        return {id(o) for o in gc.get_objects() if isinstance(o, aio_pika.RobustConnection) and not o.is_closed}

    unreachable = Broker("amqp://guest:guest@127.0.0.1:1/", BrokerSettings(prefix=broker_prefix), [], name="down")
    gc.disable()  # keep what the attempts dropped in sight until it is counted
    try:
        before = open_connections()
        await unreachable.start()
        await asyncio.sleep(1.0)  # two attempts or more (0.5 s between the first ones)
        await unreachable.close()
        assert open_connections() - before == set()
    finally:
        gc.enable()


@pytest.fixture
async def silent_broker() -> AsyncIterator[str]:
    """The URL of a server that opens the socket and never answers, as a RabbitMQ out of file
    descriptors does (it stops reading new connections for every client, silently)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"amqp://guest:guest@127.0.0.1:{port}/"
    server.close()


async def test_a_broker_that_never_answers_the_handshake_is_named_for_what_it_may_be(
    silent_broker: str, broker_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No AMQP handshake within the connect timeout (lowered to 0.5 s here): the worker's log and the
    dlq tool say so, and what it may be (an unreachable host, a RabbitMQ out of file descriptors),
    instead of a bare TimeoutError; the dlq tool gives up instead of waiting for ever."""
    monkeypatch.setattr(connection_module, "CONNECT_TIMEOUT", 0.5)
    expected = "no AMQP handshake within 0.5 s: the host unreachable, or RabbitMQ out of file descriptors"
    broker = Broker(silent_broker, BrokerSettings(prefix=broker_prefix), ["acc-1"], name="silent")
    with capture_logs() as logs:
        with pytest.raises(BrokerUnavailable):
            await broker.start(wait=1.5)
        await broker.close()
    [first, *_] = [entry for entry in logs if entry["event"] == "broker.unreachable"]
    assert first["detail"].startswith(expected)
    async with asyncio.timeout(5):
        with pytest.raises(BrokerUnavailable) as caught:
            await DeadLetters(silent_broker, broker_prefix).list()
    assert str(caught.value).startswith(expected)
