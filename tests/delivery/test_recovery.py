"""Recovery from LMS faults (issue 11): uncertain writes checked at once, listings that must prove
themselves, unreadable 2xx answers, mixes of 5xx, 429 and 408, and an outage met by the breaker.

Each test runs the real pipeline (receiver, RabbitMQ, worker, SQLite) against the StackOne
stand-in, with time compressed through the settings.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.delivery.conftest import Sender, Start, assign, calls, settled, wait_for
from tests.pipeline.conftest import ACCOUNT, SettingsFactory

JANE = "jane.smith@acme.example"
REF = "exec:scenario:discovery-call"
FAST: dict[str, Any] = {"backoff_base": 0.2, "backoff_cap": 1.6, "retry_delays": (0.2, 0.4, 0.8, 1.6)}


async def complete(sender: WebhookSender, email: str, *, score: float = 90.0, scenario: str = "discovery-call") -> None:
    """Post a signed Exec ``assignment.completed`` for ``email`` (Pass, ``score``) and expect 202."""
    assignment = exec_assignment(
        f"as-{scenario}-{email}", email, scenario=scenario, status="completed", best_score=score
    )
    status, body = await sender.post("acme-sales", exec_event("assignment.completed", assignment))
    assert status == 202, body


def _per_record(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((r["account"], r["user_id"], r["body"]["learning_object_external_reference"]) for r in rows)


async def test_a_408_then_a_check_listing_answered_200_with_an_error_body_writes_the_completion_once(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion create answered 408 after StackOne wrote it, then the listing that checks it answered
    200 with an error body (no ``data``): that is a failed check, not "nothing there". The record stays
    uncertain, is checked again and ends with exactly one completion (before the fix: two)."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.fail_next(408, retry_after=1, method="POST", path_contains="/completions", write_before_failing=True)
    stackone.fail_next(200, method="GET", path_contains="/completions", body={"error": "upstream unavailable"})

    await complete(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.completions(ACCOUNT)) == 1
    assert len(stackone.assignments(ACCOUNT)) == 1
    listings = calls(stackone, "GET", f"/users/{jane}/completions")
    assert [r.status for r in listings][:2] == [200, 200]
    assert len(listings) >= 2, "the error body was taken for an empty listing"
    assert [r.status for r in calls(stackone, "POST", "/completions")] == [408]


async def test_a_2xx_without_json_on_a_create_that_was_written_is_recorded_once(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion create answered 201 with a body that is not JSON, after StackOne wrote it: no crash,
    the write counts as uncertain, a listing finds it and nothing is written again."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.fail_next(201, method="POST", path_contains="/completions", write_before_failing=True, raw=b"OK")

    await complete(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.completions(ACCOUNT)) == 1
    assert len(calls(stackone, "POST", "/completions")) == 1
    assert calls(stackone, "GET", f"/users/{jane}/completions"), "the unreadable 2xx was not checked"


async def test_a_2xx_without_json_on_a_create_that_was_not_written_is_not_lost(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion create answered 200 with a non-JSON body and NOT written (a proxy's answer): it is not
    counted as written (before the fix the record was marked synced and the completion lost); after the
    lease it is listed again and written, exactly once."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.fail_next(200, method="POST", path_contains="/completions", raw=b"<html>OK</html>")

    await complete(sender_for(runtime), JANE)

    async def written() -> bool:
        return len(stackone.completions(ACCOUNT)) == 1

    await wait_for(written, timeout=20, what="the completion")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.completions(ACCOUNT)) == 1
    assert len(calls(stackone, "POST", "/completions")) == 2


async def _send_all(runtime: Runtime, sender: WebhookSender, people: list[str]) -> dict[str, float]:
    """Assign then complete a training for each person; returns when each completion's webhook was sent."""
    sent: dict[str, float] = {}
    for email in people:
        await assign(sender, email)
        sent[email] = time.perf_counter()
        await complete(sender, email)
    return sent


def _latencies(stackone: StackOneStandIn, ids: dict[str, str], sent: dict[str, float]) -> list[float]:
    """Seconds from each person's completion webhook to their completion landing in the LMS."""
    by_user = {c["user_id"]: c["received"] for c in stackone.completions(ACCOUNT)}
    return [by_user[ids[email]] - sent[email] for email in sent]


async def test_30_percent_of_writes_500_and_15_percent_429_every_record_lands_once_within_60_s(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """StackOne answers 30 % of writes with 500 and 15 % of all calls with 429 (Retry-After: 1): every
    assignment and completion lands exactly once, each within 60 s of its webhook."""
    people = [f"mix{i:02d}@acme.example" for i in range(20)]
    ids = {email: stackone.add_user(ACCOUNT, email) for email in people}
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.set_fault_rates(write_5xx=0.30, burst_429=0.15, retry_after=1)

    sent = await _send_all(runtime, sender_for(runtime), people)

    assert await settled(runtime, timeout=90) == {ACCOUNT: {"synced": len(people)}}
    stackone.set_fault_rates()
    assert set(_per_record(stackone.assignments()).values()) == {1}
    assert set(_per_record(stackone.completions()).values()) == {1}
    assert len(stackone.completions()) == len(people)
    latencies = _latencies(stackone, ids, sent)
    assert max(latencies) <= 60.0, sorted(latencies)
    assert stackone.violations == []


async def test_30_percent_of_creates_408_after_the_write_every_record_once_and_completions_within_30_s(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """30 % of creates are written and then answered 408: each is checked by listing at once (not after
    the lease), so every assignment and completion is in the LMS once, each completion within 30 s."""
    people = [f"slow{i:02d}@acme.example" for i in range(20)]
    ids = {email: stackone.add_user(ACCOUNT, email) for email in people}
    runtime = await start_runtime(make_settings(broker=FAST, worker={"sync_lease_seconds": 60.0}))
    stackone.set_fault_rates(create_408=0.30)

    sent = await _send_all(runtime, sender_for(runtime), people)

    assert await settled(runtime, timeout=60) == {ACCOUNT: {"synced": len(people)}}
    assert any(r.status == 408 for r in stackone.requests), "no 408 was injected"
    assert set(_per_record(stackone.assignments()).values()) == {1}
    assert set(_per_record(stackone.completions()).values()) == {1}
    assert len(stackone.completions()) == len(people)
    latencies = _latencies(stackone, ids, sent)
    # With a 60 s lease, waiting it out after a 408 would take a minute: the check comes at once.
    assert max(latencies) <= 30.0, sorted(latencies)
    assert stackone.violations == []


async def test_an_outage_pauses_the_account_burns_no_attempts_and_everything_lands_after_recovery(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """StackOne answers every call 503 for "10 minutes" (6 s here, with max_retry_age 3 s): the breaker
    opens after a few failures and pauses the account; until StackOne is back only probes are sent;
    nothing is dead-lettered though the outage outlasts max_retry_age; once a probe succeeds,
    everything lands within a few seconds (60 s unscaled), each record once."""
    people = [f"out{i:02d}@acme.example" for i in range(10)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    broker = {**FAST, "breaker_min_calls": 3, "breaker_window": 5.0, "probe_max_seconds": 0.5, "max_retry_age": 3.0}
    runtime = await start_runtime(make_settings(broker=broker, worker={"pause_probe_seconds": 0.2}))
    assert runtime.consumer is not None
    stackone.disable_account(ACCOUNT, 503)

    sender = sender_for(runtime)
    for email in people:
        await assign(sender, email)

    async def paused() -> bool:
        return runtime.consumer is not None and runtime.consumer.paused_accounts == [ACCOUNT]

    await wait_for(paused, timeout=10, what="the breaker to pause the account")
    opened = time.time()
    await wait_for(lambda: _after(opened + 6.0), timeout=10, what="the outage")
    stackone.enable_account(ACCOUNT)
    recovered = time.time()

    assert await settled(runtime, timeout=30) == {ACCOUNT: {"synced": len(people)}}
    landed = max(a["received"] for a in stackone.assignments(ACCOUNT))
    assert landed - time.perf_counter() + (time.time() - recovered) <= 5.0
    assert await dead_letters.list() == []
    during = [r for r in stackone.requests if opened + 0.5 < r.time < recovered]
    assert during, "nothing was sent while paused: no probes"
    assert all(r.method == "GET" and r.query.get("page_size") == "1" for r in during), [
        (r.method, r.path) for r in during if r.query.get("page_size") != "1"
    ]
    assert set(_per_record(stackone.assignments()).values()) == {1}
    assert len(stackone.assignments(ACCOUNT)) == len(people)


async def _after(moment: float) -> bool:
    return time.time() >= moment


async def test_a_502_on_a_completion_the_lms_wrote_anyway_is_listed_before_writing_again(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion create answered 502 (the provider failed) after the LMS wrote it: the retry lists
    the person's completions first, finds it and writes nothing more, so the LMS holds one completion
    (before: a 5xx cleared the write-ahead intent, the retry created again, and the LMS held two)."""
    jane = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.fail_next(502, method="POST", path_contains="/completions", write_before_failing=True)

    await complete(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.completions(ACCOUNT)) == 1
    assert [r.status for r in calls(stackone, "POST", "/completions")] == [502]
    [create] = calls(stackone, "POST", "/completions")
    listings = calls(stackone, "GET", f"/users/{jane}/completions")
    assert listings, "the retry did not list"
    assert listings[0].time > create.time, "lmsbridge created again without listing first"
    assert stackone.violations == []


async def test_a_502_on_a_completion_the_lms_did_not_write_is_written_once_after_the_listing(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion create answered 502 without writing: the retry lists, finds nothing, and creates it
    once; the 5xx costs one listing, not a wait for the lease."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST, worker={"sync_lease_seconds": 120}))
    stackone.fail_next(502, method="POST", path_contains="/completions")
    started = time.monotonic()

    await complete(sender_for(runtime), JANE)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert time.monotonic() - started < 30
    assert len(stackone.completions(ACCOUNT)) == 1
    assert [r.status for r in calls(stackone, "POST", "/completions")] == [502, 201]
    assert stackone.violations == []


async def test_an_uncertain_completion_is_found_on_an_lms_that_keeps_only_the_day_and_whole_percents(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion (85.4 %, 08:00) answered 408 after the write, on an LMS that lists completions with
    only their day and whole percents (midnight, 85): the check recognises it as the one sent, and the
    LMS keeps one completion (before: only an exact time and score matched, so the check found nothing,
    and after the lease the completion was written a second time)."""
    jane = stackone.add_user(ACCOUNT, JANE)
    stackone.completions_keep_day_and_whole_percent = True
    settings = make_settings(broker=FAST, stackone={"timeout": 1.0}, worker={"sync_lease_seconds": 2})
    runtime = await start_runtime(settings)
    stackone.fail_next(408, retry_after=1, method="POST", path_contains="/completions", write_before_failing=True)

    await complete(sender_for(runtime), JANE, score=85.4)

    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert len(stackone.completions(ACCOUNT)) == 1
    assert [r.status for r in calls(stackone, "POST", "/completions")] == [408]
    assert calls(stackone, "GET", f"/users/{jane}/completions"), "the uncertain create was not checked"
