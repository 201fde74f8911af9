"""Events published in groups (``broker.publish_linger``), against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

from lmsbridge.broker import Broker, Names
from lmsbridge.broker.codec import decode
from lmsbridge.domain import LearningObject
from lmsbridge.errors import BrokerUnavailable
from lmsbridge.settings import BrokerSettings
from tests.broker.test_broker import _replace_events_queue, sample_event
from tests.conftest import remember_accounts, take_messages

pytestmark = pytest.mark.usefixtures("steady_gc")  # the windows are timed in this process

WINDOW = 0.2
Make = Callable[[float], Awaitable[Broker]]


@pytest.fixture
async def make_broker(amqp_url: str, broker_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Connected brokers with the full topology under one unique prefix, each with its own window."""
    remember_accounts(broker_prefix, ["acc-1"])
    made: list[Broker] = []

    async def make(linger: float) -> Broker:
        settings = BrokerSettings(prefix=broker_prefix, publish_linger=linger)
        broker = Broker(amqp_url, settings, ["acc-1"], name=f"{request.node.name}-{len(made)}")
        made.append(broker)
        await broker.start(wait=10)
        return broker

    yield make
    for broker in made:
        await broker.close()


async def _queued(amqp_url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def test_a_lone_publish_goes_at_once(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """With nothing in flight (no window open, no confirm outstanding) a publish does not wait for
    a window: a quiet hour's event is confirmed well within what one window would take."""
    broker = await make_broker(WINDOW)
    for message_id in ("alone-1", "alone-2"):  # the second after the first's confirm: nothing in flight again
        started = time.perf_counter()
        await broker.publish_event(sample_event(message_id), timeout=5)
        assert time.perf_counter() - started < WINDOW / 2
    assert await _queued(amqp_url, Names(broker_prefix).events) == 2


async def test_publishes_behind_an_outstanding_confirm_are_confirmed_together_when_the_window_closes(
    make_broker: Make, amqp_url: str, broker_prefix: str
) -> None:
    """Publishes started while the first one's confirm is outstanding wait for one window and go
    together: one started 50 ms into that window returns with the others (not a window later), none
    of them sooner than the window, the first well before it, and every one of them is queued."""
    broker = await make_broker(WINDOW)
    started = time.perf_counter()
    returned: dict[str, float] = {}

    async def publish(message_id: str, after: float) -> None:
        if after:
            await asyncio.sleep(after)
        await broker.publish_event(sample_event(message_id), timeout=5)
        returned[message_id] = time.perf_counter() - started

    # Started in this order in one turn: "first" is in flight when the others look.
    await asyncio.gather(publish("first", 0), publish("w-1", 0), publish("w-2", 0), publish("late", 0.05))
    assert returned["first"] < WINDOW / 2
    waited = [returned[name] for name in ("w-1", "w-2", "late")]
    assert min(waited) >= WINDOW * 0.95
    assert max(waited) < WINDOW + 0.1  # "late" did not open a window of its own
    assert await _queued(amqp_url, Names(broker_prefix).events) == 4


async def test_a_publish_cancelled_in_its_window_leaves_the_others_to_be_published(
    make_broker: Make, amqp_url: str, broker_prefix: str
) -> None:
    """A caller gone while its publish waits for the window (a client hanging up) publishes nothing,
    and the others waiting in the same window are still confirmed and queued."""
    broker = await make_broker(WINDOW)
    first = asyncio.create_task(broker.publish_event(sample_event("first"), timeout=5))  # in flight
    kept = [asyncio.create_task(broker.publish_event(sample_event(f"k-{i}"), timeout=5)) for i in range(2)]
    gone = asyncio.create_task(broker.publish_event(sample_event("gone"), timeout=5))
    await asyncio.sleep(WINDOW / 4)
    assert first.done()
    assert not any(task.done() for task in kept)  # they are waiting for the window
    gone.cancel()
    await asyncio.gather(first, *kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await _queued(amqp_url, Names(broker_prefix).events) == 3


async def test_a_refused_publish_leaves_nothing_in_flight(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """A publish that fails (here: its caller gone while it waits for its confirm) does not count
    as in flight afterwards: the next lone publish still goes at once."""
    broker = await make_broker(WINDOW)
    lost = asyncio.create_task(broker.publish_event(sample_event("lost"), timeout=5))
    await asyncio.sleep(0)  # it has published and waits for its confirm
    lost.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lost
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await broker.publish_event(sample_event("next"), timeout=5)
    assert time.perf_counter() - started < WINDOW / 2


async def test_without_a_window_a_publish_goes_at_once(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """``publish_linger = 0`` publishes at once: confirmed well within what one window would take."""
    broker = await make_broker(0.0)
    started = time.perf_counter()
    await broker.publish_event(sample_event("now"), timeout=5)
    assert time.perf_counter() - started < WINDOW / 2
    assert await _queued(amqp_url, Names(broker_prefix).events) == 1


async def _publish_group(broker: Broker, names: list[str], *, title: str = "X") -> list[BaseException | None]:
    """Publish ``names[0]`` alone, then the rest while its confirm is outstanding (one group): each outcome."""
    events = [sample_event(name).model_copy(update={"learning_object": LearningObject(
        external_reference="exec:scenario:x", title=title)}) for name in names]  # fmt: skip
    outcomes = await asyncio.gather(*(broker.publish_event(e, timeout=5) for e in events), return_exceptions=True)
    return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]


def _refusals(outcomes: list[BaseException | None]) -> list[str]:
    """What each refused caller was told (every outcome must be a refusal, a 503)."""
    assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes), outcomes
    return [str(outcome) for outcome in outcomes]


async def test_a_group_is_queued_as_lone_publishes_are(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """The events of one group (one written larger than a frame) are queued persistent, in order,
    with their ids and bodies whole: they decode to the events published."""
    broker = await make_broker(WINDOW)
    long_title = "t" * 200_000  # more than one body frame (131,072 bytes at most)
    names = ["first", "g-1", "g-2", "g-3"]
    assert await _publish_group(broker, names, title=long_title) == [None] * 4
    queued = await take_messages(amqp_url, Names(broker_prefix).events)
    assert [m.message_id for m in queued] == names
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in queued)
    decoded = [decode(m).event for m in queued]
    assert all(event is not None and event.learning_object.title == long_title for event in decoded)
    assert [event.correlation_id for event in decoded if event is not None] == ["corr-1"] * 4


async def test_each_event_of_a_group_gets_its_own_answer(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """In a group sent to a queue with room for two more, RabbitMQ confirms the first two and nacks
    the rest: exactly those callers are refused, and the next group is confirmed again (each confirm
    still matches its own event)."""
    names = Names(broker_prefix)
    broker = await make_broker(WINDOW)
    await _replace_events_queue(amqp_url, names, {"x-max-length": 2, "x-overflow": "reject-publish"})
    outcomes = await _publish_group(broker, ["first", "g-1", "g-2", "g-3"])
    assert outcomes[:2] == [None, None]
    assert _refusals(outcomes[2:]) == ["RabbitMQ refused or lost the message: DeliveryError"] * 2
    assert [m.message_id for m in await take_messages(amqp_url, names.events)] == ["first", "g-1"]
    assert await _publish_group(broker, ["again", "h-1"]) == [None, None]
    assert [m.message_id for m in await take_messages(amqp_url, names.events)] == ["again", "h-1"]


async def test_an_unroutable_group_is_refused(make_broker: Make, amqp_url: str, broker_prefix: str) -> None:
    """With no queue bound, RabbitMQ returns every event of a group (they are mandatory): each
    caller is refused, none confirmed; once a queue is back, a group is confirmed and queued."""
    names = Names(broker_prefix)
    broker = await make_broker(WINDOW)
    await _replace_events_queue(amqp_url, names, None)
    outcomes = await _publish_group(broker, ["first", "g-1", "g-2"])
    assert _refusals(outcomes) == ["RabbitMQ refused or lost the message: PublishError"] * 3
    await _replace_events_queue(amqp_url, names, {})
    assert await _publish_group(broker, ["back", "b-1", "b-2"]) == [None] * 3
    assert [m.message_id for m in await take_messages(amqp_url, names.events)] == ["back", "b-1", "b-2"]


async def test_a_group_whose_channel_closes_is_refused_at_once(
    make_broker: Make, amqp_url: str, broker_prefix: str
) -> None:
    """A group written to an exchange deleted while it waited in its window (RabbitMQ closes the
    channel) is refused well before the publish timeout: no caller is left waiting for a confirm
    that cannot come."""
    broker = await make_broker(WINDOW)
    first = asyncio.create_task(broker.publish_event(sample_event("first"), timeout=5))
    group = [asyncio.create_task(broker.publish_event(sample_event(f"g-{i}"), timeout=5)) for i in range(2)]
    await first
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(Names(broker_prefix).exchange)
    assert not any(task.done() for task in group)  # still in their window
    started = time.perf_counter()
    outcomes = await asyncio.gather(*group, return_exceptions=True)
    assert time.perf_counter() - started < 2
    assert _refusals(outcomes) == ["RabbitMQ refused or lost the message: ChannelNotFoundEntity"] * 2


async def test_a_grouped_publish_past_its_deadline_is_refused_and_not_sent(
    make_broker: Make, amqp_url: str, broker_prefix: str
) -> None:
    """A publish whose timeout ends while it waits in its window is refused as not confirmed in
    time (a 503 at the receiver), and its event is not written with the group: only the others are queued."""
    broker = await make_broker(WINDOW)
    first = asyncio.create_task(broker.publish_event(sample_event("first"), timeout=5))
    kept = asyncio.create_task(broker.publish_event(sample_event("kept"), timeout=5))
    late = asyncio.create_task(broker.publish_event(sample_event("late"), timeout=WINDOW / 4))
    outcomes = list(await asyncio.gather(first, kept, late, return_exceptions=True))
    assert outcomes[:2] == [None, None]
    assert _refusals(outcomes[2:]) == ["RabbitMQ did not confirm in time"]
    assert [m.message_id for m in await take_messages(amqp_url, Names(broker_prefix).events)] == ["first", "kept"]


async def test_a_group_whose_connection_closed_in_its_window_is_refused_when_the_window_closes(
    make_broker: Make,
) -> None:
    """With the connection closed while a group waits in its window, its callers are refused as soon
    as the window closes (a 503 at the receiver, so the sender retries), not at their timeout."""
    broker = await make_broker(WINDOW)
    first = asyncio.create_task(broker.publish_event(sample_event("first"), timeout=5))
    group = [asyncio.create_task(broker.publish_event(sample_event(f"g-{i}"), timeout=5)) for i in range(2)]
    await first
    assert broker.connection is not None
    await broker.connection.close()
    started = time.perf_counter()
    outcomes = list(await asyncio.gather(*group, return_exceptions=True))
    assert time.perf_counter() - started < WINDOW * 2
    assert _refusals(outcomes) == ["RabbitMQ is not connected"] * 2


async def test_a_publish_while_the_channel_reopens_is_refused_at_once(
    make_broker: Make, amqp_url: str, broker_prefix: str
) -> None:
    """Right after RabbitMQ closed the publishing channel (a publish to a deleted exchange), the next
    publish is refused at once while the channel reopens, rather than waiting for it."""
    broker = await make_broker(0.0)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(Names(broker_prefix).exchange)
    outcomes: list[BaseException | None] = []
    for name in ("closes-it", "while-closed"):
        started = time.perf_counter()
        try:
            await broker.publish_event(sample_event(name), timeout=5)
            outcomes.append(None)
        except BrokerUnavailable as exc:
            outcomes.append(exc)
        assert time.perf_counter() - started < 1.0
    assert _refusals(outcomes) == [
        "RabbitMQ refused or lost the message: ChannelNotFoundEntity",
        "RabbitMQ's channel is closed (reopening)",
    ]
