"""Records that no message would ever sync again, and accounts that bounce between paused and resumed
(issue 13, items 2 and 3): the database always says what happened, and nothing is lost.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika
import asyncpg
from structlog.testing import capture_logs

from lmsbridge.broker.codec import SyncTask
from lmsbridge.broker.dead import DeadLetters
from lmsbridge.broker.topology import DELIVERY_LIMIT, Names
from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, settled, wait_for
from tests.pipeline.conftest import ACCOUNT, SettingsFactory

JANE = "jane.smith@acme.example"


def created_event(name: str) -> AssignmentEvent:
    """An Exec ``assignment.created`` for Jane, named ``name`` throughout (ids, scenario, title)."""
    now = datetime.now(UTC)
    return AssignmentEvent(
        message_id=f"{name}-1",
        source="acme-sales",
        platform="exec",
        type="assignment.created",
        occurred_at=now,
        received_at=now,
        correlation_id=name,
        assignment_id=f"as-{name}",
        learning_object=LearningObject(external_reference=f"exec:scenario:{name}", title=name.title()),
        people=(PersonProgress(email=JANE),),
    )


async def test_a_pending_record_without_a_message_is_swept_and_written(
    make_settings: SettingsFactory, start_runtime: Start, stackone: StackOneStandIn
) -> None:
    """A record stored as pending with no message anywhere (its message lost: a write after an ack
    failed, a process died between two steps) is found by the sweeper once it has been unchanged
    for ``sweep_after`` and queued again: it lands (before the fix it stayed pending forever)."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker={"sweep_after": 1.0, "sweep_interval": 0.3}))
    assert runtime.repo is not None
    event = created_event("orphan")
    # Stored the way the consumer stores an event, but no sync task is ever published for it.
    await runtime.repo.intake.ingest([(event, list(event.people))], {"acme-sales": [ACCOUNT]})
    assert (await runtime.repo.stats.status_counts())[ACCOUNT] == {"pending": 1}

    async def landed() -> bool:
        return len(stackone.assignments(ACCOUNT)) == 1

    await wait_for(landed, timeout=15, what="the swept record to land")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.assignments(ACCOUNT)) == 1


async def test_an_account_refusing_only_writes_cycles_without_reaching_the_delivery_limit(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """An account answering 403 to creates and 200 to the read probe is paused, probed healthy, resumed
    and refused again, 60 times. The cycle never counts against the quorum queue's x-delivery-limit
    (50): the task is published again, not requeued. Nothing is dead-lettered by the broker (before
    the fix: broker:delivery_limit while the database said pending), and once the account accepts
    writes the record lands once."""
    stackone.add_user(ACCOUNT, JANE)
    settings = make_settings(worker={"pause_probe_seconds": 0.01}, broker={"probe_max_seconds": 0.01})
    runtime = await start_runtime(settings)
    assert runtime.repo is not None
    stackone.fail_next(403, times=60, path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime, timeout=60) == {ACCOUNT: {"synced": 1}}
    refused = [r for r in calls(stackone, "POST", "/assignments") if r.status == 403]
    assert len(refused) == 60
    assert await dead_letters.list() == []
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert not (await runtime.repo.accounts.account(ACCOUNT)).paused


async def test_a_paused_account_is_not_probed_before_its_pause_is_written(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    pg_url: str,
) -> None:
    """An account answering 403 is paused while another session holds a lock on its row in
    PostgreSQL, so the pause waits to be written. It is not probed (nor resumed) before that write:
    no probe call reaches StackOne while the row is locked. Once it is free the account is resumed
    and the database says so. (Before the fix the probe started at once: a quick probe could write
    "resumed" before the pause wrote "paused", leaving the database saying paused while the
    account's queue was consumed. Seen once in CI, as the 60-cycle test above failing.)"""
    stackone.add_user(ACCOUNT, JANE)
    settings = make_settings(
        database_url=pg_url, worker={"pause_probe_seconds": 0.01}, broker={"probe_max_seconds": 0.01}
    )
    runtime = await start_runtime(settings)
    assert runtime.repo is not None
    sender = sender_for(runtime)
    # A first assignment lands: the account's row exists and its directory is read.
    await assign(sender, JANE, scenario="first")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}

    async def pausing() -> bool:
        return runtime.metrics.registry.get_sample_value("lmsbridge_paused_accounts") == 1.0

    def probes() -> list[object]:
        return [r for r in stackone.requests if r.account == ACCOUNT and r.query.get("page_size") == "1"]

    probed_before = len(probes())
    other = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        locking = other.transaction()
        await locking.start()
        locked = await other.fetch("SELECT account FROM accounts WHERE account = $1 FOR NO KEY UPDATE", ACCOUNT)
        assert len(locked) == 1  # the row the pause will update
        stackone.fail_next(403, path_contains="/assignments")
        await assign(sender, JANE, scenario="second")
        await wait_for(pausing, what="the account to be paused")
        await asyncio.sleep(0.5)  # fifty probe intervals
        assert len(probes()) == probed_before
        await locking.rollback()
    finally:
        await other.close()

    assert await settled(runtime, timeout=20) == {ACCOUNT: {"synced": 2}}
    assert len(probes()) > probed_before, "the account was resumed without a probe call"
    assert not (await runtime.repo.accounts.account(ACCOUNT)).paused
    assert len(stackone.assignments(ACCOUNT)) == 2


async def test_a_task_delivered_49_times_is_dead_lettered_by_lmsbridge_with_the_record_saying_so(
    make_settings: SettingsFactory,
    start_runtime: Start,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
    amqp_url: str,
    broker_prefix: str,
) -> None:
    """A sync task returned to its queue 49 times (crashed consumers) would be dead-lettered by the
    broker on its next return, leaving the record ``pending`` with no message. lmsbridge dead-letters
    it itself instead, as ``delivery_limit``, and the record says ``dead`` with that reason."""
    stackone.add_user(ACCOUNT, JANE)
    settings = make_settings()
    repo = Repository(create_engine(settings.database_url.get_secret_value()))
    await upgrade(repo.engine)
    event = created_event("looped")
    [stored] = await repo.intake.ingest([(event, list(event.people))], {"acme-sales": [ACCOUNT]})
    await repo.close()
    intake = await start_runtime(settings, worker=False)
    await intake.broker.publish_sync(SyncTask(stored.record_ids[0], ACCOUNT), correlation_id="c", received_at=0.0)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Names(broker_prefix).sync(ACCOUNT))
        for _ in range(DELIVERY_LIMIT - 1):
            message = await queue.get(no_ack=False, timeout=5)
            await message.nack(requeue=True)

    worker = await start_runtime(settings, receiver=False)
    assert worker.repo is not None

    async def recorded() -> bool:
        assert worker.repo is not None
        if not await dead_letters.list():
            return False
        return await worker.repo.stats.top_reasons("dead") == [("delivery_limit", 1)]

    await wait_for(recorded, timeout=10, what="the dead letter, recorded on the record")
    [letter] = await dead_letters.list()
    assert letter.reason == "delivery_limit"
    assert stackone.assignments() == []


async def test_records_waiting_in_their_accounts_queue_are_not_swept_as_lost(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """An account paused while 20 assignments arrive holds 20 sync tasks in its queue; resumed, it
    drains at the rate limit (4 requests a second here) for five times ``sweep_after``. Its pending
    records are not lost, only queued: the sweeper leaves them while the account's queue holds
    messages (before: each ``sweep_after`` it queued every one still waiting again, dozens of
    copies, each logged as a lost message). Every assignment lands once."""
    people = [f"queued{i}@acme.example" for i in range(20)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings(
        broker={"sweep_after": 3.0, "sweep_interval": 0.3, "prefetch": 1},  # in hand: under a second
        stackone={"rate_limit_per_minute": 240},
        worker={"pause_probe_seconds": 1.0},
    )
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    with capture_logs() as logs:
        stackone.disable_account(ACCOUNT)
        for i, email in enumerate(people):
            await assign(sender, email, scenario=f"queued-{i}")

        async def all_queued() -> bool:
            depths = await runtime.update_queue_depths()
            return depths[Names(settings.broker.prefix).sync(ACCOUNT)] == len(people)

        await wait_for(all_queued, timeout=15, what="20 sync tasks in the paused account's queue")
        stackone.enable_account(ACCOUNT)
        assert await settled(runtime, timeout=120) == {ACCOUNT: {"synced": len(people)}}
    assert [e for e in logs if e["event"] == "sync.swept"] == []
    written = [(a["user_id"], a["body"]["learning_object_external_reference"]) for a in stackone.assignments(ACCOUNT)]
    assert len(written) == len(set(written)) == len(people)
