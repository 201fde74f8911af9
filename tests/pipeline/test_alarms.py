"""A RabbitMQ resource alarm (memory or disk): publishers are blocked until it clears.

Before, each webhook waited out the whole publish timeout (5 s) for a confirm that could not come
and /readyz said ready; the event then sat in the socket and RabbitMQ took it once the alarm
cleared, after its sender had been told 503 (a ghost copy, deduplicated later).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import aio_pika
import aiohttp
import pytest

from lmsbridge.broker import Names
from lmsbridge.runtime import Runtime
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import SECRET, SettingsFactory
from tests.pipeline.test_resilience import Start


def set_memory_watermark(fraction: float) -> None:
    """RabbitMQ's memory high watermark; a tiny one raises the memory alarm at once."""
    subprocess.run(
        ["rabbitmqctl", "set_vm_memory_high_watermark", str(fraction)], check=True, capture_output=True, timeout=60
    )


def memory_watermark() -> float:
    """The watermark in force (to put it back as it was)."""
    out = subprocess.run(
        ["rabbitmqctl", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return float(out.splitlines()[-1])


async def wait_until_ready(session: aiohttp.ClientSession, url: str, timeout: float = 20.0) -> None:
    """Poll the receiver's /readyz until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{url}/readyz") as ready:
            if ready.status == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz not 200 after {timeout} s")
        await asyncio.sleep(0.1)


async def queued_ids(amqp_url: str, name: str) -> list[str]:
    """The message ids of what ``name`` holds (taken off it)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name)
        ids = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            ids.append(message.message_id or "")
        return ids


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
async def test_a_memory_alarm_gets_prompt_503s_and_not_ready_then_events_are_accepted_again(
    make_settings: SettingsFactory, start_runtime: Start, amqp_url: str, broker_prefix: str
) -> None:
    """RabbitMQ's memory alarm raised under a receiver. RabbitMQ blocks the connection when it next
    publishes, so that webhook waits out the publish timeout (503). From then on, webhooks get a
    503 at once, nothing of theirs is written (no copy reaches the queue once the alarm clears) and
    /readyz says not ready (``publishing`` false); after the alarm, webhooks are accepted again."""
    receiver: Runtime = await start_runtime(make_settings(receiver={"publish_timeout": 3.0}), worker=False)
    intake = Names(broker_prefix).intake("acme-sales")

    def envelope(i: int) -> dict[str, Any]:
        return exec_event("assignment.created", exec_assignment(f"as-alarm-{i}", "alarm@acme.example", scenario="s"))

    before = memory_watermark()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{receiver.port}", SECRET, session=session)
        url = f"http://127.0.0.1:{receiver.port}"
        try:
            set_memory_watermark(0.0001)
            status, _ = await sender.post("acme-sales", envelope(1), message_id="msg-alarm-1")
            assert status == 503  # by now RabbitMQ has told the connection it is blocked
            for i in (2, 3, 4):
                started = time.monotonic()
                status, body = await sender.post("acme-sales", envelope(i), message_id=f"msg-alarm-{i}")
                assert time.monotonic() - started < 1.0
                assert (status, body["error"]["code"]) == (503, "broker_unavailable")
            async with session.get(f"{url}/readyz") as ready:
                assert ready.status == 503
                assert (await ready.json())["checks"]["publishing"] is False
        finally:
            set_memory_watermark(before)
        await wait_until_ready(session, url)
        status, _ = await sender.post("acme-sales", envelope(2), message_id="msg-alarm-2")
        assert status == 202
    # The first one's copy may be there (it was written before RabbitMQ blocked the connection).
    assert sorted(set(await queued_ids(amqp_url, intake)) - {"msg-alarm-1"}) == ["msg-alarm-2"]
