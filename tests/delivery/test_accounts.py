"""Several StackOne accounts: each gets its own writes, and one account's trouble never holds up another."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import aio_pika
from structlog.testing import capture_logs

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.broker.topology import Names, sync_key
from lmsbridge.logs import merge_bound
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, record_count, settled, sync_status, wait_for
from tests.pipeline.conftest import ACCOUNT as ACCOUNT_MAIN
from tests.pipeline.conftest import SECRET, SettingsFactory

JANE = "jane.smith@acme.example"
REF = "exec:scenario:discovery-call"


async def test_one_source_writes_to_both_accounts_and_a_500_storm_on_one_does_not_delay_the_other(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A source linked to a1 and a2 writes to both; three 500s on a1 do not hold up a2, which syncs first."""
    on_a1 = stackone.add_user("a1", JANE)
    on_a2 = stackone.add_user("a2", JANE)
    runtime = await start_runtime(make_settings(accounts=["a1", "a2"]))
    stackone.fail_next(500, times=3, account="a1")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {"a1": {"synced": 1}, "a2": {"synced": 1}}
    [first, second] = stackone.assignments()
    assert (first["account"], first["user_id"]) == ("a2", on_a2)
    assert (second["account"], second["user_id"]) == ("a1", on_a1)
    assert {a["body"]["learning_object_external_reference"] for a in (first, second)} == {REF}
    # a2 was done before a1 even got through its backoff: a2's create precedes a1's last 500.
    a1_failures = [r for r in stackone.requests if r.account == "a1" and r.status == 500]
    assert len(a1_failures) == 3
    [a2_create] = calls(stackone, "POST", "/assignments", account="a2")
    assert a2_create.time < a1_failures[-1].time
    assert stackone.content("a1").keys() == stackone.content("a2").keys() == {REF}
    assert stackone.violations == []


async def test_412_pauses_only_that_account_keeps_its_message_and_the_probe_resumes_it(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
    broker_prefix: str,
) -> None:
    """412 on a1 pauses a1 (message kept, not dead-lettered) while a2 syncs; re-enabled, a1 resumes and lands.

    The paused account is probed every second here (5 s at first by default, doubling to a minute).
    """
    on_a1 = stackone.add_user("a1", JANE)
    stackone.add_user("a2", JANE)
    stackone.disable_account("a1")
    settings = make_settings(
        accounts=["a1", "a2"], worker={"pause_probe_seconds": 1.0}, broker={"probe_max_seconds": 1.0}
    )
    runtime = await start_runtime(settings)
    assert runtime.repo is not None
    assert runtime.consumer is not None
    repo = runtime.repo

    await assign(sender_for(runtime), JANE)

    async def a1_paused() -> bool:
        return (await repo.accounts.account("a1")).paused and await sync_status(runtime, "a2") == {"synced": 1}

    await wait_for(a1_paused, what="a1 paused and a2 synced")
    state = await repo.accounts.account("a1")
    assert state.reason is not None
    assert "412" in state.reason
    assert runtime.consumer.paused_accounts == ["a1"]
    assert runtime.metrics.registry.get_sample_value("lmsbridge_paused_accounts") == 1.0
    assert not (await repo.accounts.account("a2")).paused
    assert await sync_status(runtime, "a1") == {"pending": 1}

    async def message_waits() -> bool:
        depths = await runtime.update_queue_depths()
        return depths.get(Names(broker_prefix).sync("a1")) == 1

    await wait_for(message_waits, what="a1's message back in its queue")
    assert await dead_letters.list() == []
    assert stackone.assignments("a1") == []
    assert len(stackone.assignments("a2")) == 1

    stackone.enable_account("a1")
    assert await settled(runtime, timeout=20) == {"a1": {"synced": 1}, "a2": {"synced": 1}}
    [landed] = stackone.assignments("a1")
    assert landed["user_id"] == on_a1
    assert not (await repo.accounts.account("a1")).paused
    assert runtime.consumer.paused_accounts == []
    probes = [r for r in stackone.requests if r.account == "a1" and r.query.get("page_size") == "1"]
    assert probes, "a1 resumed without a probe call"
    assert probes[-1].status == 200  # the probe that resumed it (those before, if any, were refused)
    assert all(p.status == 412 for p in probes[:-1])
    assert record_count(runtime, "paused") >= 1
    assert record_count(runtime, "dead_lettered") == 0
    assert stackone.violations == []


async def test_a_paused_accounts_probe_lines_carry_no_message_of_their_own(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """The lines of a paused account's probe (``account.still_paused``, ``account.resumed``) name the
    account and no message: the probe runs on its own, long after the message that paused it
    (before: every probe line carried that message's correlation, message and record ids)."""
    stackone.add_user("a1", JANE)
    stackone.disable_account("a1")
    settings = make_settings(accounts=["a1"], worker={"pause_probe_seconds": 0.5}, broker={"probe_max_seconds": 0.5})
    runtime = await start_runtime(settings)
    with capture_logs(processors=[merge_bound]) as logs:
        await assign(sender_for(runtime), JANE)

        async def probed() -> bool:
            return any(e["event"] == "account.still_paused" for e in logs)

        await wait_for(probed, what="a probe of the paused account")
        stackone.enable_account("a1")
        assert await settled(runtime, timeout=20) == {"a1": {"synced": 1}}
    paused = [e for e in logs if e["event"] == "account.paused"]
    assert paused
    assert paused[0].get("message_id"), "the line of the pause itself names the message that paused it"
    probe_lines = [e for e in logs if e["event"] in ("account.still_paused", "account.resumed")]
    assert {e["event"] for e in probe_lines} == {"account.still_paused", "account.resumed"}
    for line in probe_lines:
        assert line["account"] == "a1"
        assert not {"message_id", "record_id", "correlation_id"} & set(line), line


async def test_one_sources_backlog_does_not_hold_up_another_sources_event(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """With 200 events of one platform queued, another platform's single event is written among the first.

    Each source has its own intake queue, consumed beside the others, as each account has its
    own sync queue: a platform's backlog delays nobody else's events.
    """
    people = [f"p{i:03d}@acme.example" for i in range(200)]
    for email in people:
        stackone.add_user("a1", email)
    stackone.add_user("a2", JANE)
    sources = {
        "acme-sales": {"platform": "exec", "secrets": [SECRET], "accounts": ["a1"]},
        "acme-sales-eu": {"platform": "exec", "secrets": [SECRET], "accounts": ["a2"]},
    }
    settings = make_settings(accounts=["a1", "a2"], sources=sources, stackone={"rate_limit_per_minute": 600_000})
    intake = await start_runtime(settings, worker=False)
    sender = sender_for(intake)
    for email in people:
        await assign(sender, email)
    await assign(sender, JANE, source="acme-sales-eu")  # queued last, behind all of the backlog

    worker = await start_runtime(settings, receiver=False)

    async def written_for_b() -> bool:
        return bool(stackone.assignments("a2"))

    await wait_for(written_for_b, what="the other source's assignment")
    assert await settled(worker) == {"a1": {"synced": 200}, "a2": {"synced": 1}}
    # Records are numbered in the order their events were stored: B's came among the first,
    # not after the 200 queued before it.
    database = settings.database_url.get_secret_value().removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as db:
        [(b_record,)] = db.execute("SELECT id FROM records WHERE source = 'acme-sales-eu'").fetchall()
    assert b_record <= 50, f"the other source's event was stored as number {b_record} of 201"


async def test_a_worker_facing_a_deep_backlog_stores_no_further_ahead_of_the_lms_than_its_prefetch_allows(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """300 events queued before the worker starts (prefetch 16): while it drains them, at no moment
    are more than about 16 records stored but not yet in the LMS, so delivery keeps pace with intake
    and a deep queue never starves the LMS writes; every record is written once in the end. Each
    record is synced by the consumer that stored it, from the first event on: no sync task is
    published for any of them (a tap bound to the account's routing key stays empty).

    (Before: the worker took the intake before the account's sync queue, so the first events it
    was handed, up to a prefetch of them, queued their syncs; that queue's prefetch waited stored
    on top of the intake's, 32 and 34 records of 16 under load. The bound allows twice the prefetch
    for RabbitMQ's own slack; storing ahead of the syncs went to 243 before that.)"""
    people = [f"q{i:03d}@acme.example" for i in range(300)]
    for email in people:
        stackone.add_user(ACCOUNT_MAIN, email)
    settings = make_settings(stackone={"rate_limit_per_minute": 600_000})
    intake = await start_runtime(settings, worker=False)
    sender = sender_for(intake)
    for email in people:
        await assign(sender, email)

    names = Names(settings.broker.prefix)
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        tap = await channel.declare_queue(exclusive=True)
        await tap.bind(names.exchange, routing_key=sync_key(ACCOUNT_MAIN))
        worker = await start_runtime(settings, receiver=False)
        most_ahead = 0
        while True:
            counts = await sync_status(worker, ACCOUNT_MAIN)
            most_ahead = max(most_ahead, counts.get("pending", 0))
            if counts.get("synced", 0) == len(people):
                break
            await asyncio.sleep(0.02)
        queued = (await channel.declare_queue(tap.name, passive=True)).declaration_result.message_count
    assert queued == 0, f"{queued} records had their sync queued instead of synced where they were stored"
    assert most_ahead <= 2 * 16, f"{most_ahead} records were stored ahead of their LMS writes"
    assert len(stackone.assignments(ACCOUNT_MAIN)) == len(people)


async def test_a_pause_settled_after_another_worker_synced_the_record_leaves_it_synced(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Two workers on one account: the one answered 403 pauses the account and queues the record's
    task again, the other worker takes that task and writes the record, and then the first notes
    why the record waited. The record stays synced: marked pending again (as before), it had no
    message left to sync it, and waited for the sweeper (15 minutes) with the LMS already right.

    Acks linger 1 s here, so the pausing worker's note after its ack comes after the other's write."""
    stackone.add_user(ACCOUNT_MAIN, JANE)
    settings = make_settings(broker={"ack_linger": 1.0}, worker={"inline_sync_limit": 0})
    first = await start_runtime(settings)
    second = await start_runtime(settings, receiver=False)
    stackone.fail_next(403, account=ACCOUNT_MAIN)

    await assign(sender_for(first), JANE)

    async def paused_and_written() -> bool:
        noted = record_count(first, "paused") + record_count(second, "paused")
        return noted >= 1 and len(stackone.assignments(ACCOUNT_MAIN)) == 1

    await wait_for(paused_and_written, what="a pause noted and the record written by the other worker")

    async def synced() -> bool:  # the writer's mark may land a moment after StackOne saw its write
        return await sync_status(first, ACCOUNT_MAIN) == {"synced": 1}

    await wait_for(synced, timeout=5.0, what="the record synced (pending again, it would wait for the sweeper)")
    assert len(stackone.assignments(ACCOUNT_MAIN)) == 1
    assert stackone.violations == []
