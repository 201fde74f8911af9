"""A queue deleted by hand (an operator's cleanup, a policy's expiry) comes back by itself.

Before, a deleted intake queue left the receiver answering 503 for that source until someone
restarted it, and a deleted queue that only the worker consumes stayed gone: retries waited in
their delay queue for a queue nobody declared.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aio_pika
import aiohttp
from structlog.testing import capture_logs

from lmsbridge.broker import Names
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import (
    WebhookSender,
    exec_assignment,
    exec_event,
    limeplate_assignment,
    limeplate_created,
)
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory, settled
from tests.pipeline.test_resilience import Start, assert_once, deliver


async def delete_queue(amqp_url: str, name: str) -> None:
    """Delete ``name`` as an operator would (``rabbitmqctl delete_queue``), whatever it holds."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def queue_state(amqp_url: str, name: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of ``name``, or None when there is no such queue."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def wait_for_queue(amqp_url: str, name: str, *, consumers: int, timeout: float = 20.0) -> tuple[int, int]:
    """Poll until ``name`` exists with ``consumers`` consumers; its state then."""
    deadline = asyncio.get_running_loop().time() + timeout
    state = None
    while asyncio.get_running_loop().time() < deadline:
        state = await queue_state(amqp_url, name)
        if state is not None and state[1] == consumers:
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: {state} after {timeout} s")


async def test_a_receiver_whose_intake_queue_was_deleted_declares_it_again(
    make_settings: SettingsFactory, start_runtime: Start, amqp_url: str, broker_prefix: str
) -> None:
    """A receiver alone, its source's intake queue deleted: the event comes back unroutable and
    is refused with a 503 (it is in no queue); a second later the receiver has declared its queues
    again and logged it, and the vendor's retry is accepted and waits in the new queue."""
    receiver = await start_runtime(make_settings(), worker=False)
    intake = Names(broker_prefix).intake("acme-sales")
    await delete_queue(amqp_url, intake)
    assert await queue_state(amqp_url, intake) is None
    statuses: Counter[int] = Counter()
    envelope = exec_event("assignment.created", exec_assignment("as-gone-1", "gone@acme.example", scenario="s"))
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(f"http://127.0.0.1:{receiver.port}", SECRET, session=session)
            await deliver(sender, "acme-sales", "msg-gone-1", envelope, statuses)
        # Logged once every declaration is done; the intake queue, among the first, may take an event before.
        for _ in range(100):
            if any(entry["event"] == "broker.topology_declared" for entry in logs):
                break
            await asyncio.sleep(0.05)
    assert set(statuses) == {503, 202}
    assert statuses[202] == 1
    assert await queue_state(amqp_url, intake) == (1, 0)
    events = [entry["event"] for entry in logs]
    assert "broker.unroutable" in events
    assert "broker.topology_declared" in events
    unroutable = next(entry for entry in logs if entry["event"] == "broker.unroutable")
    assert unroutable["routing_key"] == "event.acme-sales"


async def test_a_queue_recreated_by_hand_with_other_arguments_is_named_and_refusals_stay_honest(
    make_settings: SettingsFactory, start_runtime: Start, amqp_url: str, broker_prefix: str
) -> None:
    """The intake queue deleted and made again by hand as a classic queue, unbound: RabbitMQ
    refuses the receiver's declaration (other arguments). The receiver logs why, naming the
    queue, keeps answering 503 for that source (nothing is accepted that is not queued), and still
    accepts the other source's events."""
    receiver = await start_runtime(make_settings(), worker=False)
    intake = Names(broker_prefix).intake("acme-sales")
    await delete_queue(amqp_url, intake)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(intake, durable=True)
    envelope = exec_event("assignment.created", exec_assignment("as-args-1", "args@acme.example", scenario="s"))
    statuses: Counter[int] = Counter()
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(f"http://127.0.0.1:{receiver.port}", SECRET, session=session)
            deadline = asyncio.get_running_loop().time() + 4.0
            while asyncio.get_running_loop().time() < deadline:
                status, _ = await sender.post("acme-sales", envelope, message_id="msg-args-1")
                statuses[status] += 1
                await asyncio.sleep(0.2)
            other = limeplate_created(limeplate_assignment("lp-args-1"))
            assert (await sender.post("acme-security", other))[0] == 202
    assert set(statuses) == {503}
    failed = [entry for entry in logs if entry["event"] == "broker.topology_declare_failed"]
    assert failed
    assert intake in failed[0]["detail"]
    assert "guest" not in failed[0]["detail"]
    assert await queue_state(amqp_url, intake) == (0, 0)


async def test_a_worker_declares_again_a_queue_deleted_under_its_consumer(
    make_settings: SettingsFactory, start_runtime: Start, amqp_url: str, broker_prefix: str
) -> None:
    """A worker alone, its account's sync queue deleted under it (RabbitMQ cancels the consumer):
    the queue is back, with the worker consuming it, within seconds. Nothing else publishes to
    it here, so the worker's own consumer recovery is what declares it."""
    await start_runtime(make_settings(), receiver=False)
    sync = Names(broker_prefix).sync(ACCOUNT)
    assert await wait_for_queue(amqp_url, sync, consumers=1) == (0, 1)
    await delete_queue(amqp_url, sync)
    assert await wait_for_queue(amqp_url, sync, consumers=1) == (0, 1)


async def test_queues_deleted_under_a_running_pipeline_lose_nothing(
    make_settings: SettingsFactory,
    start_runtime: Start,
    stackone: StackOneStandIn,
    amqp_url: str,
    broker_prefix: str,
) -> None:
    """`lmsbridge run` with the intake and sync queues deleted between two batches: every event
    the receiver accepted (the platform retrying each until a 2xx) reaches the LMS once, and the
    only refusals are 503s."""
    runtime: Runtime = await start_runtime(make_settings())
    people = [f"del{i:02d}@acme.example" for i in range(15)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    events = [
        (f"msg-del-{i}", exec_event("assignment.created", exec_assignment(f"as-del-{i}", email, scenario="s")))
        for i, email in enumerate(people)
    ]
    statuses: Counter[int] = Counter()
    names = Names(broker_prefix)
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)
        for message_id, envelope in events[:5]:
            await deliver(sender, "acme-sales", message_id, envelope, statuses)
        assert await settled(runtime) == {ACCOUNT: {"synced": 5}}
        await delete_queue(amqp_url, names.intake("acme-sales"))
        await delete_queue(amqp_url, names.sync(ACCOUNT))
        await asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events[5:]))
    assert set(statuses) <= {202, 503}
    assert statuses[202] == len(events)
    assert await settled(runtime, timeout=60) == {ACCOUNT: {"synced": len(events)}}
    assert_once(stackone, len(events))
