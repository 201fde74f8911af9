"""A RabbitMQ resource alarm (memory or disk): publishers are blocked until it clears.

Before, each webhook waited out the whole publish timeout (5 s) for a confirm that could not come
and /readyz said ready; the event then sat in the socket and RabbitMQ took it once the alarm
cleared, after its sender had been told 503 (a ghost copy, deduplicated later).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from lmsbridge.broker import Names
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.cli.test_cli import dead_letter, lmsbridge, write_config
from tests.conftest import take_messages
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory, settled
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


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
async def test_a_memory_alarm_gets_prompt_503s_and_not_ready_then_events_are_accepted_again(
    make_settings: SettingsFactory, start_runtime: Start, amqp_url: str, broker_prefix: str
) -> None:
    """RabbitMQ's memory alarm raised under a receiver. RabbitMQ blocks the connection when it next
    publishes: that webhook gets its 503 within a second too, not after the 3 s publish timeout
    (before: it waited the timeout out). From then on, webhooks get a 503 at once, nothing of
    theirs is written (no copy reaches the queue once the alarm clears) and /readyz says not ready
    (``publishing`` false); after the alarm, webhooks are accepted again."""
    receiver: Runtime = await start_runtime(make_settings(receiver={"publish_timeout": 3.0}), worker=False)
    intake = Names(broker_prefix).intake("acme-sales")

    def envelope(i: int) -> dict[str, Any]:
        return exec_event("assignment.created", exec_assignment(f"as-alarm-{i}", "alarm@acme.example", scenario="s"))

    before = memory_watermark()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{receiver.port}", SECRET, session=session)
        url = f"http://127.0.0.1:{receiver.port}"
        try:
            async with asyncio.timeout(60):  # a hang still puts the watermark back (finally)
                set_memory_watermark(0.0001)
                started = time.monotonic()
                status, body = await sender.post("acme-sales", envelope(1), message_id="msg-alarm-1")
                assert time.monotonic() - started < 1.0
                assert (status, body["error"]["code"]) == (503, "broker_unavailable")
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
    queued = {message.message_id or "" for message in await take_messages(amqp_url, intake)}
    assert sorted(queued - {"msg-alarm-1"}) == ["msg-alarm-2"]


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
async def test_a_worker_keeps_draining_its_queues_through_a_memory_alarm(
    make_settings: SettingsFactory, start_runtime: Start, stackone: StackOneStandIn
) -> None:
    """`lmsbridge run` with a backlog when RabbitMQ's memory alarm goes off, and a webhook then
    blocking the connection it published on: the worker still writes and acks the whole backlog
    during the alarm (its consumers are on a connection that never publishes), which is what lets
    RabbitMQ's memory go down. Before, its acks stopped with the publishing connection and it
    stalled at the prefetch limit until the alarm cleared."""
    people = [f"drain{i:02d}@acme.example" for i in range(40)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings(broker={"prefetch": 4}, receiver={"publish_timeout": 2.0})
    runtime = await start_runtime(settings)
    stackone.set_fault_rates(slow=1.0, slow_seconds=0.25)  # the backlog takes seconds to write
    before = memory_watermark()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)
        for i, email in enumerate(people):
            assignment = exec_assignment(f"as-drain-{i}", email, scenario="s")
            assert (await sender.post("acme-sales", exec_event("assignment.created", assignment)))[0] == 202
        try:
            async with asyncio.timeout(90):  # a hang still puts the watermark back (finally)
                set_memory_watermark(0.0001)
                late = exec_event("assignment.created", exec_assignment("as-drain-late", people[0], scenario="late"))
                assert (await sender.post("acme-sales", late))[0] == 503  # the publishing connection is blocked
                assert len(stackone.assignments(ACCOUNT)) < len(people)  # the alarm came with a backlog
                counts = await settled(runtime, timeout=60)
                during = len(stackone.assignments(ACCOUNT))
        finally:
            set_memory_watermark(before)
    assert counts == {ACCOUNT: {"synced": len(people)}}
    assert during == len(people)


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
async def test_dlq_replay_under_a_memory_alarm_says_so_and_keeps_the_dead_letter(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq replay --all` while RabbitMQ blocks publishers: it exits 1 with one line that points at
    an alarm (not "unreachable": RabbitMQ answered the connect), and the dead letter is still there
    to replay once the alarm clears."""
    await dead_letter(amqp_url, broker_prefix, 9)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    before = memory_watermark()
    try:
        set_memory_watermark(0.0001)
        result = await asyncio.to_thread(lmsbridge, "--config", config, "dlq", "replay", "--all")
    finally:
        set_memory_watermark(before)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("lmsbridge: RabbitMQ did not answer in time (a memory or disk alarm blocking publishers?")
    )
    listed = await asyncio.to_thread(lmsbridge, "--config", config, "dlq", "list", "--json")
    assert [row["message_id"] for row in json.loads(listed.stdout)] == ["sync:9:acc-1"]


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
async def test_a_retry_during_a_memory_alarm_waits_in_the_worker_and_lands_after_it(
    make_settings: SettingsFactory, start_runtime: Start, stackone: StackOneStandIn
) -> None:
    """A sync that fails (StackOne 500) while RabbitMQ blocks the worker's publishing connection:
    its retry waits in the worker for the alarm to lift, the message unacked, instead of failing
    after the publish timeout and going round its queue (RabbitMQ dead-letters a message delivered
    50 times). Once the alarm clears, the record reaches the LMS once."""
    user = stackone.add_user(ACCOUNT, "retry@acme.example")
    stackone.add_user(ACCOUNT, "late@acme.example")  # its refused event may land yet: written before the block
    runtime = await start_runtime(make_settings(receiver={"publish_timeout": 2.0}))
    stackone.fail_next(500, delay=4.0, path_contains="assignments", method="POST")  # under its 5 s timeout
    before = memory_watermark()
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)
            first = exec_event("assignment.created", exec_assignment("as-retry-1", "retry@acme.example", scenario="s"))
            assert (await sender.post("acme-sales", first))[0] == 202
            try:
                async with asyncio.timeout(90):  # a hang still puts the watermark back (finally)
                    set_memory_watermark(0.0001)
                    late = exec_event(
                        "assignment.created", exec_assignment("as-retry-2", "late@acme.example", scenario="t")
                    )
                    assert (await sender.post("acme-sales", late))[0] == 503  # the connection is blocked now
                    await asyncio.sleep(16)  # the 500 comes at ~4 s; a failing retry publish gives up 10 s later
                    assert stackone.assignments(ACCOUNT) == []
            finally:
                set_memory_watermark(before)
        assert set((await settled(runtime, timeout=60))[ACCOUNT]) == {"synced"}
    assert [a["user_id"] for a in stackone.assignments(ACCOUNT)].count(user) == 1
    # Failing after the publish timeout instead, the event went round its queue: "RabbitMQ did not confirm".
    worker = [entry for entry in logs if not entry["event"].startswith("webhook.")]
    assert [entry["event"] for entry in worker if "RabbitMQ" in str(entry.get("error", ""))] == []
    assert any(entry["event"] == "broker.blocked_wait" for entry in logs)


@pytest.mark.serial  # raises RabbitMQ's memory alarm for every test running beside it
def test_the_demo_posts_again_through_a_short_alarm_and_names_a_long_one(tmp_path: Path, amqp_url: str) -> None:
    """`lmsbridge demo` under a RabbitMQ alarm posts each refused webhook again, as a platform would:
    an alarm that clears within seconds costs only time (exit 0, every record in the LMS); one that
    lasts stops it after 30 s of 503s with exit 1, naming the receiver's reason (before: each webhook
    got one 503, then it waited two minutes for the sync of nothing and said "0 of 0 records")."""
    command = [sys.executable, "-m", "lmsbridge.cli", "demo", "--events", "8", "--amqp-url", amqp_url]
    before = memory_watermark()
    try:
        set_memory_watermark(0.0001)
        demo = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(10)
        set_memory_watermark(before)
        out, _ = demo.communicate(timeout=150)
        set_memory_watermark(0.0001)
        started = time.monotonic()
        result = lmsbridge("demo", "--events", "8", "--amqp-url", amqp_url, cwd=tmp_path)
        took = time.monotonic() - started
    finally:
        set_memory_watermark(before)
    assert demo.returncode == 0, out[-3000:]
    assert "every record reached the LMS" in " ".join(out.split())
    said = " ".join(result.stdout.split())
    assert result.returncode == 1, said[-3000:]
    assert (
        "lmsbridge demo: the receiver kept refusing webhooks for 30 s, the last answer 503 (the event"
        " could not be queued; retry later): RabbitMQ is blocking publishers (a memory or disk alarm"
    ) in said
    assert took < 55
