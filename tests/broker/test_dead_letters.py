"""The dead-letter tool on many messages, against the real RabbitMQ: every walk covers the messages
the queue held as it began, in order, and ``replay --all`` sends each back once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aio_pika
import pytest

from lmsbridge.broker import Broker, Names, codec
from lmsbridge.broker import dead as dead_module
from lmsbridge.broker.codec import SyncTask, decode
from lmsbridge.broker.dead import DeadLetters
from lmsbridge.settings import BrokerSettings
from tests.conftest import remember_accounts, take_messages


@pytest.fixture
async def broker(amqp_url: str, broker_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    """A connected broker with the full topology under a unique prefix."""
    remember_accounts(broker_prefix, ["acc-1"])
    b = Broker(amqp_url, BrokerSettings(prefix=broker_prefix), ["acc-1"], name=request.node.name)
    await b.start(wait=10)
    yield b
    await b.close()


async def kill(broker: Broker, record_ids: range, account: str = "acc-1") -> None:
    """Dead-letter a sync task for each record, in order, as the worker does after a 422."""
    for rid in record_ids:
        task = SyncTask(rid, account)
        await broker.publish_dead_sync(
            task, correlation_id="c", received_at=1.0, attempt=3, reason="stackone_422", error="bad due_date"
        )


async def synced(amqp_url: str, prefix: str) -> list[int]:
    """The record ids of the sync tasks waiting in acc-1's queue, oldest first (taken off it)."""
    return [
        decode(m).sync.record_id  # type: ignore[union-attr]
        for m in await take_messages(amqp_url, Names(prefix).sync("acc-1"))
    ]


async def sending_back(amqp_url: str, queue_name: str) -> None:
    """Wait until ``queue_name`` holds a message."""
    connection = await aio_pika.connect(amqp_url)
    async with connection, asyncio.timeout(20):
        channel = await connection.channel()
        while not (await channel.declare_queue(queue_name, passive=True)).declaration_result.message_count:
            await asyncio.sleep(0.01)


async def test_replay_all_sends_each_dead_letter_of_its_start_back_once_in_order_and_none_later(
    broker: Broker, amqp_url: str, broker_prefix: str
) -> None:
    """450 dead letters (more than two replay windows) go back to their queue once each, in the
    order they died, attempts reset; 30 that die while the replay runs (an account still broken)
    are left for the next replay instead of being chased. Those RabbitMQ handed the replay past its
    count go back as it closes, not always in their order (1 CI run: 1030 before 1029)."""
    await kill(broker, range(1, 451))
    dlq = DeadLetters(amqp_url, broker_prefix)
    replaying = asyncio.create_task(dlq.replay(None))
    await sending_back(amqp_url, Names(broker_prefix).sync("acc-1"))  # it has counted what it replays
    await kill(broker, range(1001, 1031))
    assert (await replaying).sent == 450
    assert await synced(amqp_url, broker_prefix) == list(range(1, 451))
    left = [m.message_id for m in await dlq.list(limit=1000)]
    assert sorted(left) == [f"sync:{i}:acc-1" for i in range(1001, 1031)]


async def test_walks_find_the_last_dead_letter_and_leave_every_one_in_order(
    broker: Broker, amqp_url: str, broker_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk consumes what one consumer may hold unacked: `show` finds the last, `list` gives them
    all in order, and both leave the queue as it was, in order. Past AMQP's largest prefetch (16
    bits; lowered to 10 here) a walk fetches one at a time: `show` still finds the last and nothing
    leaves the queue, though RabbitMQ takes them back in another order. `replay ID` sends back
    that one alone."""
    await kill(broker, range(1, 31))
    dlq = DeadLetters(amqp_url, broker_prefix)
    every = [f"sync:{i}:acc-1" for i in range(1, 31)]
    assert (await dlq.show("sync:30:acc-1")) is not None
    assert [m.message_id for m in await dlq.list(limit=100)] == every
    monkeypatch.setattr(dead_module, "MAX_PREFETCH", 10)
    shown = await dlq.show("sync:30:acc-1")
    assert shown is not None
    assert (shown.reason, shown.error, shown.attempt) == ("stackone_422", "bad due_date", 3)
    assert sorted(m.message_id for m in await dlq.list(limit=100)) == sorted(every)
    assert (await dlq.replay("sync:20:acc-1")).sent == 1
    assert await synced(amqp_url, broker_prefix) == [20]
    assert sorted(m.message_id for m in await dlq.list(limit=100)) == sorted(set(every) - {"sync:20:acc-1"})


async def test_dead_letters_whose_queue_is_gone_stay_dead_and_the_rest_go_back(
    broker: Broker, amqp_url: str, broker_prefix: str
) -> None:
    """Replaying sync tasks of an account no longer in the settings (its queue gone): RabbitMQ
    cannot route them, so they stay in the dead-letter queue, counted by queue, while the others go
    back; more of them than a replay window does not stop the replay (before: the first one ended
    it with a PublishError, a traceback from `dlq replay`)."""
    await kill(broker, range(1, 251), account="acc-gone")
    await kill(broker, range(251, 281))
    dlq = DeadLetters(amqp_url, broker_prefix)
    one = await dlq.replay("sync:7:acc-gone")
    assert (one.sent, one.unroutable) == (0, {"sync.acc-gone": 1})
    every = await dlq.replay(None)
    assert (every.sent, every.unroutable) == (30, {"sync.acc-gone": 250})
    assert await synced(amqp_url, broker_prefix) == list(range(251, 281))
    left = await dlq.list(limit=1000)
    assert sorted(m.message_id for m in left) == sorted(f"sync:{i}:acc-gone" for i in range(1, 251))
    assert {(m.reason, m.error, m.attempt) for m in left} == {("stackone_422", "bad due_date", 3)}


async def dead_by_hand(amqp_url: str, prefix: str, message: aio_pika.Message) -> None:
    """Publish ``message`` straight to the dead-letter exchange (as a worker or RabbitMQ would)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(Names(prefix).dead_exchange)
        await exchange.publish(message, routing_key="sync.acc-1")


async def test_a_replayed_dead_letter_starts_its_retries_afresh(
    broker: Broker, amqp_url: str, broker_prefix: str
) -> None:
    """A sync dead-lettered as ``retry_age_exceeded`` carries its first failure's time (3 days ago).
    Replayed, it goes back without it, so its next transient failure is retried, not dead-lettered
    at once for an age it had before the replay (before: the header went back with it, and one 503
    after the replay dead-lettered it again)."""
    old = time.time() - 3 * 86_400
    extra = {codec.REASON: "retry_age_exceeded", codec.ERROR: "HTTP 503", codec.ROUTING_KEY: "sync.acc-1"}
    message = codec.encode_sync(
        SyncTask(9, "acc-1"), correlation_id="c", received_at=old, attempt=7, failing_since=old, extra=extra
    )
    await dead_by_hand(amqp_url, broker_prefix, message)
    replayed = await DeadLetters(amqp_url, broker_prefix).replay("sync:9:acc-1")
    assert replayed.sent == 1
    [back] = await take_messages(amqp_url, Names(broker_prefix).sync("acc-1"))
    job = decode(back)
    assert job.failing_since is None
    assert (job.attempt, job.replayed) == (0, True)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
async def test_a_dead_letter_with_a_non_finite_attempt_is_listed_shown_and_replayed(
    broker: Broker, amqp_url: str, broker_prefix: str, value: str
) -> None:
    """A dead letter whose ``x-lmsbridge-attempt`` is not a finite number (a message published by
    hand, another tool) is listed with attempt 0 and replayed (before: OverflowError or ValueError,
    a traceback from `dlq list`, `show` and `replay`)."""
    message = codec.encode_sync(SyncTask(4, "acc-1"), correlation_id="c", received_at=1.0)
    assert message.headers is not None
    message.headers[codec.ATTEMPT] = value
    await dead_by_hand(amqp_url, broker_prefix, message)
    dlq = DeadLetters(amqp_url, broker_prefix)
    [listed] = await dlq.list(limit=10)
    assert (listed.message_id, listed.attempt) == ("sync:4:acc-1", 0)
    assert (await dlq.replay("sync:4:acc-1")).sent == 1
    assert await synced(amqp_url, broker_prefix) == [4]
