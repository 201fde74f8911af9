"""How lmsbridge delivers to StackOne when StackOne fails: one status or failure per test.

Each test runs the real pipeline (receiver, RabbitMQ, worker, SQLite) against the StackOne
stand-in, scripts one misbehaviour, and checks what the LMS holds, what lmsbridge reports
(sync states, dead letters, metrics) and that every request it sent was on the spec.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.broker.topology import Names
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, record_count, settled, sync_status, wait_for
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory

JANE = "jane.smith@acme.example"
OMAR = "omar.haddad@acme.example"
REF = "exec:scenario:discovery-call"


def _one_assignment(stackone: StackOneStandIn, account: str, user_id: str) -> None:
    """The LMS holds exactly one assignment on ``account``: ``user_id``'s, for REF."""
    [assignment] = stackone.assignments(account)
    assert (assignment["user_id"], assignment["body"]["learning_object_external_reference"]) == (user_id, REF)


async def test_429_pauses_every_account_then_the_record_lands_once(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A 429 (Retry-After: 1) on a create pauses the whole API key for 1 s, then the record lands once.

    A second source writes only to another account; its work, queued right after the 429,
    sends nothing to StackOne until the pause is over.
    """
    jane = stackone.add_user("a1", JANE)
    omar = stackone.add_user("a2", OMAR)
    sources: dict[str, Any] = {
        "acme-sales": {"platform": "exec", "secrets": [SECRET], "accounts": ["a1"]},
        "acme-sales-eu": {"platform": "exec", "secrets": [SECRET], "accounts": ["a2"]},
    }
    runtime = await start_runtime(make_settings(accounts=["a1", "a2"], sources=sources))
    sender = sender_for(runtime)
    stackone.fail_next(429, retry_after=1, account="a1", path_contains="/assignments")

    await assign(sender, JANE)

    async def limited() -> bool:
        return any(r.status == 429 for r in stackone.requests)

    await wait_for(limited, what="the 429")
    [refused] = [r for r in stackone.requests if r.status == 429]
    await assign(sender, OMAR, source="acme-sales-eu")
    assert await settled(runtime) == {"a1": {"synced": 1}, "a2": {"synced": 1}}

    later = [r for r in stackone.requests if r.time > refused.time]
    assert later, "nothing was sent after the 429"
    assert min(r.time for r in later) - refused.time >= 0.95
    assert {r.account for r in later} == {"a1", "a2"}
    _one_assignment(stackone, "a1", jane)
    _one_assignment(stackone, "a2", omar)
    assert stackone.conflicts == 0
    assert stackone.violations == []


async def test_408_after_the_write_lists_first_and_writes_no_duplicate(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A 408 on a create that StackOne wrote anyway: lmsbridge lists the user's assignments and stops."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    stackone.fail_next(408, retry_after=1, path_contains="/assignments", write_before_failing=True)

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    _one_assignment(stackone, ACCOUNT, jane)
    assert stackone.conflicts == 0
    creates = calls(stackone, "POST", f"/users/{jane}/assignments")
    listings = calls(stackone, "GET", f"/users/{jane}/assignments")
    assert [r.status for r in creates] == [408]
    assert listings, "lmsbridge created again without listing first"
    assert listings[0].time > creates[0].time
    assert stackone.violations == []


async def test_client_timeout_on_a_create_lists_first_and_writes_no_duplicate(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A create that times out on lmsbridge's side while StackOne still writes it is never written twice."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(stackone={"timeout": 1.0}))
    # StackOne answers after 1.3 s, past lmsbridge's 1 s timeout; the write lands meanwhile.
    stackone.fail_next(0, delay=1.3, path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    _one_assignment(stackone, ACCOUNT, jane)
    assert stackone.conflicts == 0
    assert len(calls(stackone, "POST", f"/users/{jane}/assignments")) == 1
    assert calls(stackone, "GET", f"/users/{jane}/assignments"), "lmsbridge never checked before creating again"
    assert (
        runtime.metrics.registry.get_sample_value(
            "lmsbridge_stackone_responses_total", {"operation": "create_assignment", "status": "0"}
        )
        == 1.0
    )
    assert stackone.violations == []


async def test_500_twice_then_success_lands_once_through_rabbitmq_retries(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Two 500s on a create, then success: one assignment, retried twice through the delay queues
    (each retry lists the person's assignments first: a 5xx may come after the LMS wrote it)."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    stackone.fail_next(500, times=2, method="POST", path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    _one_assignment(stackone, ACCOUNT, jane)
    assert [r.status for r in calls(stackone, "POST", "/assignments")] == [500, 500, 201]
    assert record_count(runtime, "retried") >= 2
    assert record_count(runtime, "pushed") == 1
    assert record_count(runtime, "dead_lettered") == 0
    assert stackone.violations == []


async def test_a_retried_sync_waits_in_one_delay_queue_and_is_tried_once_more(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    broker_prefix: str,
) -> None:
    """One 500 puts ONE copy of the sync message in ONE delay queue; it returns once and lands."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    stackone.fail_next(500, path_contains="/assignments")
    delay_queues = [Names(broker_prefix).delay(level) for level in range(3)]

    await assign(sender_for(runtime), JANE)

    async def failed() -> bool:
        return any(r.status == 500 for r in stackone.requests)

    await wait_for(failed, interval=0.01, what="the 500")
    most = 0
    for _ in range(20):  # 1 s: longer than the longest delay (0.8 s)
        depths = await runtime.update_queue_depths()
        most = max(most, sum(depths.get(q, 0) for q in delay_queues))
        await asyncio.sleep(0.05)
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert most == 1, f"the retry sat in {most} delay queues at once"
    assert stackone.violations == []


async def test_409_on_a_create_counts_as_written(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """StackOne answering 409 (the record exists) is success: synced, not retried, not dead-lettered."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    stackone.fail_next(409, path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert [r.status for r in calls(stackone, "POST", "/assignments")] == [409]
    assert record_count(runtime, "pushed") == 1
    assert record_count(runtime, "retried") == 0
    assert await dead_letters.list() == []
    assert stackone.violations == []


_PROVIDER_MESSAGE = "Validation failed: due_date must not be before assigned_at"


def _body_422() -> dict[str, Any]:
    """StackOne's 422 body with the provider's own error."""
    return {
        "statusCode": 422,
        "message": _PROVIDER_MESSAGE,
        "timestamp": "2026-05-29T08:00:00.000Z",
        "provider_errors": [
            {
                "status": 422,
                "url": "https://lms.example/api/v2/enrollments",
                "raw": {"errors": [{"field": "due_date", "code": "before_start"}]},
                "headers": {"content-type": "application/json"},
            }
        ],
    }


async def test_422_dead_letters_with_the_provider_message_and_replay_lands_it(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """A 422 dead-letters as stackone_422 with StackOne's message; replaying it later lands it, twice is harmless."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    assert runtime.repo is not None
    stackone.fail_next(422, path_contains="/assignments", body=_body_422())

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"dead": 1}}
    assert await runtime.repo.stats.top_reasons("dead") == [("stackone_422", 1)]
    [dead] = await dead_letters.list()
    assert (dead.kind, dead.reason) == ("sync", "stackone_422")
    assert _PROVIDER_MESSAGE in dead.error
    assert stackone.assignments() == []
    assert record_count(runtime, "dead_lettered") == 1

    # The provider's data is fixed (the stand-in no longer fails): the operator replays.
    assert (await dead_letters.replay(None)).sent == 1
    assert await dead_letters.list() == []

    async def landed() -> bool:
        return len(stackone.assignments(ACCOUNT)) == 1 and await sync_status(runtime, ACCOUNT) == {"synced": 1}

    await wait_for(landed, timeout=5, what="the replayed record to land")
    assert (await dead_letters.replay(None)).sent == 0  # nothing left: a second replay is a no-op
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    _one_assignment(stackone, ACCOUNT, jane)
    assert stackone.conflicts == 0
    assert stackone.violations == []


async def test_501_dead_letters_as_unsupported(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """501 (the provider cannot do this) is dead-lettered at once as stackone_501, never retried."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    assert runtime.repo is not None
    stackone.fail_next(501, path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"dead": 1}}
    assert await runtime.repo.stats.top_reasons("dead") == [("stackone_501", 1)]
    [dead] = await dead_letters.list()
    assert (dead.kind, dead.reason, dead.tries) == ("sync", "stackone_501", 1)
    assert "HTTP 501" in dead.error
    assert len(calls(stackone, "POST", "/assignments")) == 1
    assert record_count(runtime, "retried") == 0
    assert stackone.assignments() == []
    assert stackone.violations == []


async def test_5xx_for_longer_than_max_retry_age_dead_letters_as_retry_age_exceeded(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """Transient failures dead-letter by age, not by count: with max_retry_age 1.5 s and every create
    answered 503, the sync is retried (backoff with jitter) until it has been failing for 1.5 s, then
    dead-lettered as retry_age_exceeded; it is not dead after max_attempts (2) tries. The dead letter
    counts every try made (before: the retry policy's count, which ``dlq list`` showed)."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker={"max_attempts": 2, "max_retry_age": 1.5}))
    assert runtime.repo is not None
    stackone.fail_next(503, times=1000, method="POST", path_contains="/assignments")

    await assign(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"dead": 1}}
    assert await runtime.repo.stats.top_reasons("dead") == [("retry_age_exceeded", 1)]
    [dead] = await dead_letters.list()
    assert (dead.kind, dead.reason) == ("sync", "retry_age_exceeded")
    assert "HTTP 503" in dead.error
    creates = calls(stackone, "POST", "/assignments")
    assert len(creates) > 2, "dead-lettered after a count of attempts"
    assert creates[-1].time - creates[0].time > 1.5
    assert record_count(runtime, "retried") == len(creates) - 1
    assert dead.tries == len(creates), "the dead letter counts every try, as its log lines do"
    assert record_count(runtime, "dead_lettered") == 1
    assert stackone.assignments() == []
    assert stackone.violations == []
