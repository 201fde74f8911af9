"""What lands is what happened: retakes, renamed trainings, per-source message ids, true instants.

The whole pipeline on real services (RabbitMQ, SQLite or PostgreSQL, the StackOne stand-in):
signed Exec webhooks in, the LMS's completions, titles and times checked at the stand-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory, settled

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]

T0 = datetime(2026, 6, 1, 9, tzinfo=UTC)
EMAIL = "jane.smith@acme.example"
FAIL_AT, PASS_AT = T0 + timedelta(days=1), T0 + timedelta(days=5)


def _fail(n: int = 0) -> dict[str, Any]:
    done = exec_assignment("a1", EMAIL, status="did_not_pass", best_score=40.0)
    return exec_event("assignment.completed", done, at=FAIL_AT, event_id=f"evt_fail_{n}")


def _pass(n: int = 0) -> dict[str, Any]:
    done = exec_assignment("a1", EMAIL, status="completed", best_score=85.0)
    return exec_event("assignment.completed", done, at=PASS_AT, event_id=f"evt_pass_{n}")


def _completions(stackone: StackOneStandIn) -> list[tuple[str, float | None, str | None]]:
    return [
        (c["body"]["result"]["value"], (c["body"].get("score") or {}).get("percentage"), c["body"].get("completed_at"))
        for c in stackone.completions(ACCOUNT)
    ]


PASS_ROW = ("Pass", 85.0, "2026-06-06T09:00:00.000Z")
FAIL_ROW = ("Fail", 40.0, "2026-06-02T09:00:00.000Z")


@pytest.mark.parametrize(
    ("order", "settle_between", "expected"),
    [
        ("FP", True, [FAIL_ROW, PASS_ROW]),  # the retake: the Fail was written, the Pass is written too
        ("PF", True, [PASS_ROW]),  # a Fail after a Pass writes nothing
        ("FFPP", True, [FAIL_ROW, PASS_ROW]),  # duplicated (same message ids): no second copy of either
        ("PFPF", False, [PASS_ROW]),  # any order, all at once: the Pass alone
        ("FPFP", False, None),  # all at once: the Fail may or may not have been written first
    ],
)
async def test_a_retake_ends_as_one_pass_with_its_own_time_and_score(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    order: str,
    settle_between: bool,
    expected: list[tuple[str, float | None, str | None]] | None,
) -> None:
    """Fail (40 %) and Pass (85 %) of one person and training, in any order and duplicated: the LMS ends
    with exactly one Pass (the retake's score and completed_at) and at most the one Fail, never a Fail
    written after the Pass."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    seen: dict[str, int] = {}
    for kind in order:
        n = seen[kind] = seen.get(kind, -1) + 1
        envelope = _fail(0) if kind == "F" else _pass(0)
        # A duplicate is a redelivery of the same message, or the platform sending the same event anew.
        message_id = f"msg_{kind}" if n % 2 == 0 else f"msg_{kind}_{n}"
        status, _ = await sender.post("acme-sales", envelope, message_id=message_id)
        assert status == 202
        if settle_between:
            await settled(runtime)
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    got = _completions(stackone)
    assert got.count(PASS_ROW) == 1
    assert got[-1] == PASS_ROW  # nothing written after the Pass
    assert set(got) <= {PASS_ROW, FAIL_ROW}
    assert got.count(FAIL_ROW) <= 1
    if expected is not None:
        assert got == expected
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert stackone.violations == []


async def test_a_completion_that_comes_first_creates_its_assignment_in_progress_then_the_completion(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A completion whose assignment lmsbridge never saw (it came first, or the assignment predates
    lmsbridge) writes the assignment as ``in_progress`` at 100 %, then the Pass: StackOne's Create User
    Assignment page says an assignment "can be pending or in progress", and the stand-in refuses any
    other status with 422 (before: it was created ``completed``, refused, and the record, its
    completion with it, dead-lettered)."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    assert (await sender.post("acme-sales", _pass()))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    [assignment] = stackone.assignments(ACCOUNT)
    assert assignment["body"]["status"] == {"value": "in_progress"}
    assert assignment["body"]["progress"] == 100
    assert _completions(stackone) == [PASS_ROW]
    assert stackone.violations == []


@pytest.mark.parametrize(("status", "created_as"), [("in_progress", "in_progress"), ("not_started", "pending")])
async def test_an_assignment_begun_on_exec_is_created_in_progress(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    status: str,
    created_as: str,
) -> None:
    """An Exec ``assignment.created`` whose status is ``in_progress`` (the person has begun) creates
    the LMS assignment ``in_progress`` at 0 % (before: ``pending``, as if not begun); one not
    started, ``pending``."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings())
    begun = exec_assignment("a1", EMAIL, status=status)
    assert (await sender_for(runtime).post("acme-sales", exec_event("assignment.created", begun)))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    [assignment] = stackone.assignments(ACCOUNT)
    assert (assignment["body"]["status"], assignment["body"]["progress"]) == ({"value": created_as}, 0)
    assert stackone.violations == []


@pytest.mark.parametrize("delete_superseded", [False, True])
async def test_a_training_assigned_again_a_year_later_gets_its_own_completion(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    delete_superseded: bool,
) -> None:
    """Exec assigns the scenario again a year after Jane passed it (a new assignment) and she passes
    again with the same score: the LMS gets this year's completion beside last year's (before:
    the same result and score was "not a retake", so the LMS kept only last year's), last year's
    is never deleted as superseded, and a late duplicate of last year's writes nothing."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings(stackone={"delete_superseded_completions": delete_superseded}))
    sender = sender_for(runtime)
    last_year = T0 - timedelta(days=365)
    cycles = [("a1", last_year, "evt_pass_2025"), ("a2", T0, "evt_pass_2026")]
    for assignment_id, created, pass_id in cycles:
        assigned = exec_assignment(assignment_id, EMAIL, created_at=created)
        assert (await sender.post("acme-sales", exec_event("assignment.created", assigned, at=created)))[0] == 202
        done = exec_assignment(assignment_id, EMAIL, status="completed", best_score=85.0, created_at=created)
        at = created + timedelta(days=5)
        assert (await sender.post("acme-sales", exec_event("assignment.completed", done, at=at, event_id=pass_id)))[
            0
        ] == 202
        assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    late = exec_assignment("a1", EMAIL, status="completed", best_score=95.0, created_at=last_year)
    late_at = last_year + timedelta(days=9)
    assert (await sender.post("acme-sales", exec_event("assignment.completed", late, at=late_at)))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert _completions(stackone) == [
        ("Pass", 85.0, "2025-06-06T09:00:00.000Z"),
        ("Pass", 85.0, "2026-06-06T09:00:00.000Z"),
    ]
    assert stackone.deleted_completions == []
    assert len(stackone.assignments(ACCOUNT)) == 1
    assert stackone.violations == []


async def test_a_superseded_fail_is_deleted_when_configured(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """With stackone.delete_superseded_completions, the Fail a retake replaced is deleted from the LMS."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings(stackone={"delete_superseded_completions": True}))
    sender = sender_for(runtime)
    assert (await sender.post("acme-sales", _fail()))[0] == 202
    await settled(runtime)
    assert _completions(stackone) == [FAIL_ROW]
    assert (await sender.post("acme-sales", _pass()))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert _completions(stackone) == [PASS_ROW]
    assert [c["body"]["result"]["value"] for c in stackone.deleted_completions] == ["Fail"]
    assert stackone.violations == []


@pytest.mark.parametrize("delete_superseded", [False, True], ids=["keep-history", "delete-superseded"])
async def test_a_retake_an_lms_refuses_with_409_is_a_dead_letter_and_the_fail_stays(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    delete_superseded: bool,
) -> None:
    """An LMS that keeps one completion per person and object answers the retake's Pass 409. lmsbridge
    lists, sees its Pass is not there, and dead-letters the record as ``completion_conflict``; the
    LMS keeps the Fail, and nothing is deleted (before: the 409 counted as the Pass written, so the
    LMS kept the Fail for good, and with ``delete_superseded`` the Fail was deleted too, leaving the
    person with no completion at all)."""
    stackone.add_user(ACCOUNT, EMAIL)
    stackone.one_completion_per_object = True
    settings = make_settings(stackone={"delete_superseded_completions": delete_superseded})
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    assert (await sender.post("acme-sales", _fail()))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert (await sender.post("acme-sales", _pass()))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"dead": 1}}
    assert runtime.repo is not None
    assert await runtime.repo.stats.top_reasons("dead") == [("completion_conflict", 1)]
    assert _completions(stackone) == [FAIL_ROW]
    assert stackone.deleted_completions == []
    assert stackone.violations == []


async def test_a_first_completion_answered_409_counts_as_written(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A first completion the LMS answers 409 (it holds one for the object already, entered there)
    is still recorded as written: the LMS has a completion, and nothing is written twice."""
    stackone.add_user(ACCOUNT, EMAIL)
    stackone.one_completion_per_object = True
    runtime = await start_runtime(make_settings())
    assert (await sender_for(runtime).post("acme-sales", _pass()))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert _completions(stackone) == [PASS_ROW]
    # The LMS's own completion, entered before lmsbridge's arrives for another training's record:
    stackone.fail_next(409, method="POST", path_contains="/completions")
    other = exec_assignment("a2", EMAIL, scenario="renewal", status="completed", best_score=70.0)
    envelope = exec_event("assignment.completed", other, at=PASS_AT, event_id="evt_other")
    assert (await sender_for(runtime).post("acme-sales", envelope))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 2}}
    assert [r.status for r in stackone.requests if r.method == "POST" and "/completions" in r.path][-1] == 409
    assert stackone.violations == []


async def test_a_renamed_training_ends_with_its_newest_title(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A scenario renamed between two events is upserted again with the new name; an event with the old
    name arriving late (by its event time) changes nothing: the LMS keeps the newest title."""
    for who in ("jane", "omar", "li"):
        stackone.add_user(ACCOUNT, f"{who}@acme.example")
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)

    def created(who: str, name: str, at: datetime) -> dict[str, Any]:
        return exec_event("assignment.created", exec_assignment(f"a-{who}", f"{who}@acme.example", name=name), at=at)

    assert (await sender.post("acme-sales", created("jane", "Discovery Call", T0)))[0] == 202
    await settled(runtime)
    assert (await sender.post("acme-sales", created("omar", "Discovery Call 2.0", T0 + timedelta(days=1))))[0] == 202
    await settled(runtime)
    late = created("li", "Discovery Call", T0 - timedelta(hours=1))  # sent now, happened before the rename
    assert (await sender.post("acme-sales", late))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 3}}
    [content] = stackone.content(ACCOUNT).values()
    assert content["title"] == "Discovery Call 2.0"
    upserts = [r for r in stackone.requests if r.method == "POST" and r.path.endswith("/content/batch")]
    assert len(upserts) == 2  # once per title
    assert stackone.violations == []


async def test_two_sources_with_the_same_message_id_both_land(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Two tenants (two sources) sending different events under the same message id: both are stored and
    both reach the LMS; neither is taken for a duplicate of the other."""
    stackone.add_user(ACCOUNT, "jane@acme.example")
    stackone.add_user(ACCOUNT, "omar@globex.example")
    other = {"acme-sales-2": {"platform": "exec", "secrets": [SECRET], "accounts": [ACCOUNT]}}
    runtime = await start_runtime(make_settings(sources=other))
    sender = sender_for(runtime)
    first = exec_event("assignment.created", exec_assignment("a1", "jane@acme.example"), event_id="evt_1")
    second = exec_event(
        "assignment.created", exec_assignment("a1", "omar@globex.example", scenario="renewal"), event_id="evt_1"
    )
    assert (await sender.post("acme-sales", first, message_id="msg_1"))[0] == 202
    assert (await sender.post("acme-sales-2", second, message_id="msg_1"))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 2}}
    refs = sorted(a["body"]["learning_object_external_reference"] for a in stackone.assignments(ACCOUNT))
    assert refs == ["exec:scenario:discovery-call", "exec:scenario:renewal"]
    assert runtime.repo is not None
    assert await runtime.repo.stats.inbox_count() == 2


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_times_with_offsets_reach_the_lms_as_the_same_instants(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    request: pytest.FixtureRequest,
    database: str,
) -> None:
    """A due date at -07:00, a creation time at +05:30 and a completion at -04:00 reach the LMS as the
    same instants in UTC, on SQLite and on PostgreSQL."""
    stackone.add_user(ACCOUNT, EMAIL)
    overrides: dict[str, Any] = {} if database == "sqlite" else {"database_url": request.getfixturevalue("pg_url")}
    runtime = await start_runtime(make_settings(**overrides))
    sender = sender_for(runtime)
    assignment = exec_assignment("a1", EMAIL, status="did_not_pass", best_score=40.0)
    assignment.update(due_date="2026-06-12T08:00:00-07:00", created_at="2026-05-29T14:00:00+05:30")
    envelope = {"id": "evt_offsets", "type": "assignment.completed", "timestamp": "2026-06-04T10:18:42-04:00"}
    assert (await sender.post("acme-sales", {**envelope, "data": assignment}))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    [written] = stackone.assignments(ACCOUNT)
    assert written["body"]["due_date"] == "2026-06-12T15:00:00.000Z"
    assert written["body"]["assigned_at"] == "2026-05-29T08:30:00.000Z"
    [completion] = stackone.completions(ACCOUNT)
    assert completion["body"]["completed_at"] == "2026-06-04T14:18:42.000Z"
    assert stackone.violations == []


@pytest.mark.parametrize("landed", [False, True], ids=["408-not-written", "408-written"])
async def test_the_check_after_an_uncertain_retake_looks_for_that_retake(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn, landed: bool
) -> None:
    """The retake's create answered 408: the listing that checks it looks for a completion with the Pass's
    result, score and time, so the Fail already there is not taken for it (the Pass is then written),
    and a Pass that did land is not written twice."""
    stackone.add_user(ACCOUNT, EMAIL)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    assert (await sender.post("acme-sales", _fail()))[0] == 202
    await settled(runtime)
    stackone.fail_next(408, path_contains="/completions", method="POST", write_before_failing=landed)
    assert (await sender.post("acme-sales", _pass()))[0] == 202
    assert await settled(runtime, timeout=30.0) == {ACCOUNT: {"synced": 1}}
    assert _completions(stackone) == [FAIL_ROW, PASS_ROW]
    assert stackone.violations == []
