"""What operators see: one log event per stage with its fields, one correlation id, exact metrics.

Logs are captured with structlog's testing helper, before any redaction, so a secret that
reached a log call at all would be found.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from structlog.testing import capture_logs

from lmsbridge.broker import Names
from lmsbridge.logs import merge_bound
from lmsbridge.runtime import Runtime
from lmsbridge.storage import create_engine
from lmsbridge.storage.ledger import LedgerStore
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event, limeplate_created
from tests.pipeline.conftest import ACCOUNT, PLATFORM_KEY, SECRET, STACKONE_KEY, SettingsFactory, settled
from tests.pipeline.test_resilience import AmqpProxy

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


async def _flow(runtime: Runtime, sender: WebhookSender, stackone: StackOneStandIn) -> dict[str, Any]:
    """A known batch: 3 accepted, 1 delivered twice, 1 ignored, 1 refused, 1 parked, 1 retried."""
    stackone.fail_next(500, times=1, path_contains="/assignments")
    first = exec_event("assignment.created", exec_assignment("o1", "jane@acme.example", scenario="s1"), event_id="e1")
    status, body = await sender.post("acme-sales", first, message_id="m1")
    assert status == 202
    await sender.post("acme-sales", first, message_id="m1")  # the platform retries: deduplicated
    await settled(runtime)  # one record at a time, so the counts below are exact
    done = exec_assignment("o1", "jane@acme.example", scenario="s1", status="completed", best_score=90)
    await sender.post("acme-sales", exec_event("assignment.completed", done), message_id="m2")
    stranger = exec_event("assignment.created", exec_assignment("o2", "nobody@acme.example", scenario="s2"))
    await sender.post("acme-sales", stranger, message_id="m3")
    other = {"id": "e9", "type": "assignment.archived", "timestamp": "2026-05-29T08:00:00Z", "data": {}}
    await sender.post("acme-sales", other, message_id="m4")
    forged = WebhookSender(sender.base_url, "whsec_" + base64.b64encode(b"f" * 24).decode(), session=sender.session)
    assert (await forged.post("acme-sales", first, message_id="m5"))[0] == 401
    await settled(runtime)
    return body


async def test_every_stage_logs_its_fields_with_one_correlation_id_and_no_secret(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A full flow logs each stage with message id, source, type, account, attempt and duration."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    runtime = await start_runtime(make_settings())
    with capture_logs(processors=[merge_bound]) as logs:
        await _flow(runtime, sender_for(runtime), stackone)
    events = {e["event"] for e in logs}
    assert {
        "webhook.received",
        "webhook.rejected",
        "webhook.queued",
        "webhook.deduplicated",
        "webhook.ignored",
        "event.consumed",
        "event.upserted",
        "sync.pushed",
        "sync.retried",
        "sync.parked",
        "stackone.response",
    } <= events

    queued = next(e for e in logs if e["event"] == "webhook.queued" and e["message_id"] == "m1")
    assert {"source", "event_type", "correlation_id"} <= set(queued)
    upserted = next(e for e in logs if e["event"] == "event.upserted" and e["message_id"] == "m1")
    assert {"source", "event_type", "attempt", "duration", "correlation_id"} <= set(upserted)
    pushed = [e for e in logs if e["event"] == "sync.pushed"]
    assert all({"account", "attempt", "duration", "message_id", "correlation_id"} <= set(e) for e in pushed)
    retried = next(e for e in logs if e["event"] == "sync.retried")
    assert retried["account"] == ACCOUNT

    # One correlation id from the request through the queue into the worker and its StackOne calls.
    trail = [e for e in logs if e.get("correlation_id") == queued["correlation_id"]]
    assert {
        "webhook.received",
        "webhook.queued",
        "event.consumed",
        "event.upserted",
        "sync.pushed",
        "stackone.response",
    } <= {e["event"] for e in trail}

    text = orjson.dumps(logs, default=str).decode()
    basic = base64.b64encode(f"{STACKONE_KEY}:".encode()).decode()
    for secret in (SECRET, SECRET.removeprefix("whsec_"), STACKONE_KEY, basic, PLATFORM_KEY):
        assert secret not in text


async def test_metrics_count_the_batch_exactly_and_the_ledger_balances(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """/metrics after a known batch shows exact counts per stage and zero events in flight."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    await _flow(runtime, sender, stackone)
    assert sender.session is not None
    async with sender.session.get(f"{sender.base_url}/metrics") as response:
        text = await response.text()

    def value(name: str, **labels: str) -> float:
        return float(runtime.metrics.registry.get_sample_value(name, labels) or 0.0)

    stage = {
        s: value("lmsbridge_events_total", stage=s)
        for s in (
            "received",
            "rejected",
            "ignored",
            "deduplicated",
            "accepted",
            "consumed",
            "upserted",
            "duplicate",
            "dead_lettered",
        )
    }
    assert stage == {
        "received": 6,
        "rejected": 1,
        "ignored": 1,
        "deduplicated": 1,
        "accepted": 3,
        "consumed": 3,
        "upserted": 3,
        "duplicate": 0,
        "dead_lettered": 0,
    }
    assert value("lmsbridge_ledger_in_flight") == 0
    assert value("lmsbridge_records_total", stage="parked") == 1
    assert value("lmsbridge_records_total", stage="retried") == 1
    assert value("lmsbridge_rejections_total", source="acme-sales", code="signature_mismatch") == 1
    assert value("lmsbridge_signature_matches_total", source="acme-sales", key="key0") == 5
    assert value("lmsbridge_stackone_responses_total", operation="create_assignment", status="500") == 1
    assert value("lmsbridge_stackone_responses_total", operation="create_assignment", status="201") == 1
    assert 'lmsbridge_events_total{stage="accepted"} 3.0' in text
    assert "lmsbridge_queue_depth" in text
    assert SECRET not in text
    assert STACKONE_KEY not in text


async def test_a_receiver_on_a_database_never_migrated_says_to_migrate_and_counts_once_migrated(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender
) -> None:
    """A receiver alone on a database never migrated still accepts webhooks; its one warning that
    its counters cannot be written names the schema and `lmsbridge migrate`; once the database is
    migrated its counts are written without a restart."""
    settings = make_settings()
    with capture_logs() as logs:
        runtime = await start_runtime(settings, worker=False)
        event = exec_event("assignment.created", exec_assignment("o1", "jane@acme.example"), event_id="e1")
        assert (await sender_for(runtime).post("acme-sales", event, message_id="m1"))[0] == 202
        for _ in range(100):
            failed = [entry for entry in logs if entry["event"] == "ledger.write_failed"]
            if failed:
                break
            await asyncio.sleep(0.1)
    assert len(failed) == 1
    assert failed[0]["schema"] == "none"
    assert "lmsbridge migrate" in failed[0]["hint"]

    engine = create_engine(settings.database_url.get_secret_value())
    try:
        await upgrade(engine)
        store = LedgerStore(engine)
        for _ in range(100):
            ledger = await store.system()
            if ledger.totals.get("accepted") == 1:
                break
            await asyncio.sleep(0.1)
        assert ledger.totals.get("accepted") == 1
        await store.close()
    finally:
        await engine.dispose()


async def test_retries_after_a_database_fault_log_their_real_attempt(
    pg_url: str,
    pg_admin_url: str,
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
) -> None:
    """The database refuses connections for a few seconds: each try of the event logs the attempt it
    is (0, 1, 2, ...), in its ``event.retried`` lines and in the ``event.upserted`` line once the
    database is back (before: an infrastructure fault uses no attempt of the retry policy, and every
    try logged ``attempt`` 0)."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    runtime = await start_runtime(make_settings(database_url=pg_url))
    name = urlsplit(pg_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_admin_url)
    event = exec_event("assignment.created", exec_assignment("o1", "jane@acme.example", scenario="s1"))
    try:
        with capture_logs(processors=[merge_bound]) as logs:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            assert (await sender_for(runtime).post("acme-sales", event, message_id="m1"))[0] == 202
            for _ in range(200):
                if sum(e["event"] == "event.retried" for e in logs) >= 3:
                    break
                await asyncio.sleep(0.05)
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            await settled(runtime)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
    retried = [e for e in logs if e["event"] == "event.retried"]
    assert len(retried) >= 3
    assert all(e["reason"] == "infrastructure" for e in retried)
    assert [e["attempt"] for e in retried] == list(range(len(retried)))
    [upserted] = [e for e in logs if e["event"] == "event.upserted"]
    assert upserted["attempt"] == len(retried)


async def test_an_event_redelivered_after_it_was_stored_is_settled_once_in_the_ledger(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A worker stops while an event it stored is still syncing (its StackOne call hangs past the
    drain timeout): RabbitMQ redelivers the event to the next worker, which finds it stored. Added
    over both processes, as ``status`` and the PromQL ledger add them, the event is consumed once,
    redelivered once and settled once, so accepted = upserted + duplicate + dead_lettered (before:
    consumed twice, and upserted by the first worker and a duplicate by the second: one more
    settled than accepted, ``status`` said "broken")."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    settings = make_settings(worker={"drain_timeout": 0.5})
    first = Runtime(settings, receiver=True, worker=True)
    await first.start(wait=10)
    try:
        assert first.repo is not None
        stackone.fail_next(0, delay=3.0, path_contains="/users", method="GET")  # the person's lookup hangs
        event = exec_event("assignment.created", exec_assignment("o1", "jane@acme.example", scenario="s1"))
        assert (await sender_for(first).post("acme-sales", event, message_id="m1"))[0] == 202
        for _ in range(200):
            if any("/users" in r.path for r in stackone.requests):
                break
            await asyncio.sleep(0.05)
        assert await first.repo.stats.status_counts() == {ACCOUNT: {"pending": 1}}
    finally:
        await first.stop()
    second = await start_runtime(settings, receiver=False)
    assert await settled(second, timeout=30) == {ACCOUNT: {"synced": 1}}

    def total(stage: str) -> float:
        return first.metrics.count(stage) + second.metrics.count(stage)

    assert (total("accepted"), total("consumed"), total("redelivered")) == (1, 1, 1)
    assert total("upserted") + total("duplicate") + total("dead_lettered") == total("accepted")
    assert len(stackone.assignments(ACCOUNT)) == 1


async def test_unusable_member_rows_of_a_team_assignment_are_counted_by_source(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
) -> None:
    """A team assignment of 5 whose 2nd and 4th member rows have no usable e-mail: the 3 others are
    assigned, and ``lmsbridge_member_rows_skipped_total{source}`` (exported at 0 from the start)
    counts the 2 skipped rows, so an operator can alert on them (before: only a warning line)."""
    detail = make_team_assignment(5, assignment_id="d7c8a1b2-3e45-4f67-89ab-cd0123456789")
    rows = detail["userProgress"]
    rows[1] = {k: v for k, v in rows[1].items() if k != "email"}
    rows[3] = {**rows[3], "email": 42}
    platform.add_assignment(detail)
    for row in (rows[0], rows[2], rows[4]):
        stackone.add_user(ACCOUNT, row["email"])
    runtime = await start_runtime(make_settings())

    def skipped() -> float | None:
        labels = {"source": "acme-security"}
        return runtime.metrics.registry.get_sample_value("lmsbridge_member_rows_skipped_total", labels)

    assert skipped() == 0
    listed = {k: v for k, v in detail.items() if k not in ("userProgress", "note", "assignedByName")}
    assert (await sender_for(runtime).post("acme-security", limeplate_created(listed)))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 3}}
    assert skipped() == 2


async def test_queue_depths_are_withdrawn_not_left_stale_while_rabbitmq_is_unreachable(
    make_settings: SettingsFactory, broker_prefix: str
) -> None:
    """A worker reads every queue's depth and the time it did; RabbitMQ then goes away (its
    connections dropped, nothing listening). The next read fails within its bound, withdraws
    every ``lmsbridge_queue_depth`` series and leaves the time of the last read, so a dashboard
    shows no depth and how old the last one is (before: the last depths stayed exported, as if
    current, and ``LmsbridgeQueueNotDraining`` could fire on them)."""
    proxy = AmqpProxy(make_settings().amqp_url.get_secret_value(), cut_at_consume=False)
    worker = Runtime(make_settings(amqp_url=await proxy.start()), receiver=False, worker=True)
    queue = Names(broker_prefix).sync(ACCOUNT)

    def sample(name: str, **labels: str) -> float | None:
        return worker.metrics.registry.get_sample_value(name, labels)

    try:
        await worker.start(wait=10)
        for _ in range(100):  # the worker's own first read (every 15 s) is done: none races this one
            if sample("lmsbridge_queue_depth_last_success_timestamp_seconds"):
                break
            await asyncio.sleep(0.05)
        before = time.time()
        assert (await worker.update_queue_depths())[queue] == 0
        read_at = sample("lmsbridge_queue_depth_last_success_timestamp_seconds")
        assert read_at is not None
        assert read_at >= before
        assert sample("lmsbridge_queue_depth", queue=queue) == 0
        await proxy.close()
        await asyncio.sleep(0.5)  # the worker has seen its connections go
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017, PT011 (whatever the broker's fault, it is raised)
            await worker.update_queue_depths(timeout=2.0)
        assert time.monotonic() - started < 5
        assert sample("lmsbridge_queue_depth", queue=queue) is None
        assert "lmsbridge_queue_depth{" not in worker.metrics.render().decode()
        assert sample("lmsbridge_queue_depth_last_success_timestamp_seconds") == read_at
    finally:
        await proxy.close()
        await asyncio.wait_for(worker.stop(), 30)
