"""The walking pipeline on real services: signed webhook in, the right StackOne requests out."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import aio_pika
import aiohttp
import orjson
import pytest

from lmsbridge.broker import Names
from lmsbridge.broker import connection as connection_module
from lmsbridge.runtime import Runtime
from lmsbridge.testing.limeplate import LimeplateStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import ACCOUNT, STACKONE_KEY, SettingsFactory, settled

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


@pytest.mark.parametrize("inline_limit", [32, 0], ids=["synced-where-stored", "through-sync-tasks"])
async def test_signed_exec_webhooks_reach_stackone_as_spec_valid_requests(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    inline_limit: int,
) -> None:
    """Created then completed: content upserted, one assignment and one completion, all on the spec,
    whether the worker syncs events where it stores them or queues every sync as a task."""
    jane = stackone.add_user(ACCOUNT, "jane.smith@acme.example", "Jane Smith")
    runtime = await start_runtime(make_settings(worker={"inline_sync_limit": inline_limit}))
    sender = sender_for(runtime)
    created = exec_event("assignment.created", exec_assignment("a1", "jane.smith@acme.example"))
    status, body = await sender.post("acme-sales", created)
    assert (status, body["status"]) == (202, "accepted")
    done = exec_assignment("a1", "jane.smith@acme.example", status="did_not_pass", best_score=41.5)
    status, _ = await sender.post("acme-sales", exec_event("assignment.completed", done))
    assert status == 202
    counts = await settled(runtime)
    assert counts == {ACCOUNT: {"synced": 1}}

    [content] = stackone.content(ACCOUNT).values()
    assert content["external_reference"] == "exec:scenario:discovery-call"
    assert content["title"] == "Discovery Call"
    [assignment] = stackone.assignments(ACCOUNT)
    assert assignment["user_id"] == jane
    assert assignment["body"]["learning_object_external_reference"] == "exec:scenario:discovery-call"
    assert assignment["body"]["status"]["value"] in ("pending", "in_progress")  # in_progress: the Fail came first
    [completion] = stackone.completions(ACCOUNT)
    assert completion["user_id"] == jane
    assert completion["body"]["result"] == {"value": "Fail"}
    assert completion["body"]["score"] == {"percentage": 41.5}

    assert stackone.violations == []
    expected_auth = "Basic " + base64.b64encode(f"{STACKONE_KEY}:".encode()).decode()
    for request in stackone.requests:
        assert request.headers["Authorization"] == expected_auth
        assert request.headers["x-account-id"] == ACCOUNT
        assert request.headers["User-Agent"].startswith("lmsbridge/")


async def test_same_message_id_three_times_gives_one_record_and_one_write(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A platform retrying one delivery three times causes one record and one LMS assignment."""
    stackone.add_user(ACCOUNT, "omar.haddad@acme.example")
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    envelope = exec_event("assignment.created", exec_assignment("a2", "omar.haddad@acme.example"), event_id="evt_same")
    for _ in range(3):
        status, body = await sender.post("acme-sales", envelope, message_id="msg_same")
        assert (status, body["id"]) == (202, "msg_same")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert runtime.repo is not None
    assert await runtime.repo.stats.inbox_count() == 1


async def test_bad_signature_is_refused_and_publishes_nothing(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, amqp_url: str, broker_prefix: str
) -> None:
    """A webhook signed with another secret gets 401 with a JSON error and nothing reaches RabbitMQ."""
    runtime = await start_runtime(make_settings(), worker=False)
    forger = WebhookSender(f"http://127.0.0.1:{runtime.port}", "whsec_" + base64.b64encode(b"x" * 24).decode())
    status, body = await forger.post(
        "acme-sales", exec_event("assignment.created", exec_assignment("a3", "x@y.example"))
    )
    assert status == 401
    assert body["error"]["code"] == "signature_mismatch"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Names(broker_prefix).intake("acme-sales"), passive=True)
        assert queue.declaration_result.message_count == 0


async def test_broker_down_gives_503_and_stores_nothing(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """With RabbitMQ unreachable the receiver answers 503 with Retry-After; nothing is queued or stored."""
    down = Runtime(make_settings(amqp_url="amqp://guest:guest@127.0.0.1:1/"), receiver=True, worker=False)
    await down.start(wait=None)
    try:
        envelope = exec_event("assignment.created", exec_assignment("a4", "x@y.example"))
        sender = sender_for(down)
        body = orjson.dumps(envelope)
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                f"{sender.base_url}/webhooks/acme-sales", data=body, headers=sender.sign(body, message_id="msg_down")
            )
            assert response.status == 503
            assert int(response.headers["Retry-After"]) > 0
            assert (await response.json())["error"]["code"] == "broker_unavailable"
    finally:
        await down.stop()
    # The same broker prefix and database, now with RabbitMQ up: nothing was ever queued or stored.
    runtime = await start_runtime(make_settings())
    assert runtime.repo is not None
    assert await runtime.update_queue_depths()
    assert sum((await runtime.update_queue_depths()).values()) == 0
    assert await runtime.repo.stats.inbox_count() == 0
    assert stackone.requests == []


@pytest.mark.parametrize("inline_limit", [32, 4], ids=["synced-where-stored", "larger-than-the-limit"])
async def test_team_assignment_expands_through_the_platform_api(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    inline_limit: int,
) -> None:
    """A team assignment of 12 becomes 12 LMS assignments, even when the platform API fails twice first,
    synced where stored or, for a team larger than ``worker.inline_sync_limit``, as 12 sync tasks."""
    from lmsbridge.testing.limeplate import make_team_assignment
    from lmsbridge.testing.webhooks import limeplate_created

    detail = make_team_assignment(12, assignment_id="d7c8a1b2-3e45-4f67-89ab-cd0123456789")
    platform.add_assignment(detail)
    for row in detail["userProgress"]:
        stackone.add_user(ACCOUNT, row["email"])
    platform.fail_next(500, times=2)
    runtime = await start_runtime(make_settings(worker={"inline_sync_limit": inline_limit}))
    listed = {k: v for k, v in detail.items() if k not in ("userProgress", "note", "assignedByName")}
    status, _ = await sender_for(runtime).post("acme-security", limeplate_created(listed))
    assert status == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 12}}
    assert len(stackone.assignments(ACCOUNT)) == 12
    assert {a["body"]["learning_object_external_reference"] for a in stackone.assignments(ACCOUNT)} == {
        f"limeplate:{detail['targetType']}:{detail['targetId']}"
    }
    assert stackone.violations == []


async def test_consumers_past_a_connections_channel_cap_go_on_more_connections_and_all_deliver(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker consumes each queue on a channel of its own, one per account; RabbitMQ allows 2,047
    channels a connection and closed it past that (2,100 accounts: it reconnected and was closed
    again, for ever). Past the cap a connection carries (lowered here to 3) the consumers go on
    another connection: with 4 accounts and two sources the worker holds three consuming
    connections, and an event reaches every account's LMS."""
    monkeypatch.setattr(connection_module, "CHANNELS_PER_CONNECTION", 3)
    accounts = ["acc-a", "acc-b", "acc-c", "acc-d"]
    people = {account: stackone.add_user(account, "jane.smith@acme.example") for account in accounts}
    runtime = await start_runtime(make_settings(accounts))
    assert _consuming_connections(runtime.settings.broker.prefix) == 3
    created = exec_event("assignment.created", exec_assignment("a1", "jane.smith@acme.example"))
    assert (await sender_for(runtime).post("acme-sales", created))[0] == 202
    assert await settled(runtime) == {account: {"synced": 1} for account in accounts}
    for account in accounts:
        assert [a["user_id"] for a in stackone.assignments(account)] == [people[account]]


def _consuming_connections(prefix: str) -> int:
    """How many connections hold a consumer of a queue under ``prefix``, as RabbitMQ sees them."""
    import subprocess

    def listed(*args: str) -> list[dict[str, str]]:
        out = subprocess.run(["rabbitmqctl", *args, "-q"], capture_output=True, text=True, timeout=60, check=True)
        header, *rows = [line.split("\t") for line in out.stdout.splitlines()]
        # Other tests' channels come and go meanwhile: a row caught half-made lacks fields.
        return [dict(zip(header, row, strict=True)) for row in rows if len(row) == len(header)]

    ours = {
        c["channel_pid"]
        for c in listed("list_consumers", "queue_name", "channel_pid")
        if c["queue_name"].startswith(prefix)
    }
    return len({c["connection"] for c in listed("list_channels", "pid", "connection") if c["pid"] in ours})
