"""LMS side: what lmsbridge recorded as written is really in the LMS; what is not is written again, once."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import STACKONE_KEY, settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


async def write_behind_our_back(stackone: StackOneStandIn, user_id: str, ref: str) -> None:
    """An assignment created in the LMS by someone else, for one of lmsbridge's learning objects."""
    auth = base64.b64encode(f"{STACKONE_KEY}:".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "x-account-id": ACCOUNT, "User-Agent": "someone-else/1.0"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stackone.url}/unified/lms/users/{user_id}/assignments",
            json={"learning_object_external_reference": ref, "status": {"value": "pending"}, "progress": 0},
            headers=headers,
        ) as response,
    ):
        assert response.status == 201


async def assigned(sender: WebhookSender, runtime: Runtime, people: list[str], prefix: str) -> None:
    """Each of ``people`` assigned a scenario of their own through a signed webhook, written to the LMS."""
    for i, email in enumerate(people):
        event = exec_event("assignment.created", exec_assignment(f"{prefix}{i}", email, status="not_started"))
        assert (await sender.post("acme-sales", event))[0] == 202
    await settled(runtime)


async def test_three_completions_deleted_in_the_lms_are_found_and_written_again_once(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ten completions written, three then deleted in the LMS: ``reconcile --lms`` finds exactly those
    three, reports the one write for our learning object it has no record of (and leaves it), and the
    three are written again once each; a second check finds nothing and writes nothing."""
    people = [f"rep{i:02d}@acme.example" for i in range(10)]
    users = {e: stackone.add_user(ACCOUNT, e) for e in people}
    stranger = stackone.add_user(ACCOUNT, "stranger@acme.example")
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for i, email in enumerate(people):
        done = exec_assignment(f"a{i}", email, status="completed", best_score=float(70 + i))
        assert (await sender.post("acme-sales", exec_event("assignment.created", {**done, "status": "not_started"})))[
            0
        ] == 202
        assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)
    completions = stackone.completions(ACCOUNT)
    assert len(completions) == 10
    lost = [completions[2], completions[5], completions[7]]
    for c in lost:
        stackone.remove("completion", c["id"])
    await write_behind_our_back(stackone, stranger, "exec:scenario:discovery-call")
    writes, assignments = stackone.writes(), len(stackone.assignments(ACCOUNT))
    requests = len(stackone.requests)

    assert await reconcile_command(settings, lms=True, as_json=True) == 0
    report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    assert report["finished"]
    assert report["written_checked"] == 10
    assert report["drift"] == {"lms_assignment_missing": 0, "lms_completion_missing": 3, "lms_unknown_write": 1}
    assert report["unknown_writes"] == [
        {"kind": "assignment", "user_id": stranger, "learning_object": "exec:scenario:discovery-call"}
    ]
    assert report["reopened"] == report["queued"] == 3
    lists = [
        r for r in stackone.requests[requests:] if r.path in ("/unified/lms/assignments", "/unified/lms/completions")
    ]
    assert report["stackone_calls"] == len(lists) == 2  # one page of each list
    await settled(runtime)

    now = stackone.completions(ACCOUNT)
    keyed = Counter((c["user_id"], c["body"]["learning_object_external_reference"]) for c in now)
    assert len(now) == 10
    assert set(keyed.values()) == {1}
    rewritten = {
        (c["user_id"], c["body"]["score"]["percentage"]) for c in now if c["id"] not in {x["id"] for x in completions}
    }
    assert rewritten == {(c["user_id"], c["body"]["score"]["percentage"]) for c in lost}
    assert stackone.writes() == writes + 3  # the three completions, nothing else
    assert len(stackone.assignments(ACCOUNT)) == assignments  # the stranger's is left alone
    assert set(users.values()) <= {c["user_id"] for c in now}

    assert await reconcile_command(settings, lms=True, as_json=True) == 0
    second = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    assert second["drift"]["lms_completion_missing"] == 0
    assert second["queued"] == 0
    await settled(runtime)
    assert stackone.writes() == writes + 3
    assert stackone.violations == []


async def test_a_listing_failing_on_a_later_page_asks_that_page_again_and_finds_what_is_missing(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Thirty assignments listed ten to a page, two deleted in the LMS, and the LMS failing the
    assignments' second page once (503): that page is asked again with its cursor, the pass finishes
    and finds exactly the two (every row counted once), and each is written again once."""
    people = [f"pager{i:02d}@acme.example" for i in range(30)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = reconcile_settings(stackone={"page_size": 10})
    runtime = await start_runtime(settings)
    await assigned(sender_for(runtime), runtime, people, "p")
    written = stackone.assignments(ACCOUNT)
    assert len(written) == 30
    lost = [written[4], written[23]]
    for a in lost:
        stackone.remove("assignment", a["id"])
    stackone.fail_next(503, path_contains="/unified/lms/assignments", query_has="next")
    requests = len(stackone.requests)

    assert await reconcile_command(settings, lms=True, as_json=True) == 0
    report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    listed = [r for r in stackone.requests[requests:] if r.path == "/unified/lms/assignments"]
    assert [r.status for r in listed] == [200, 503, 200, 200]  # the failed page asked again, not page 1
    assert listed[2].query["next"] == listed[1].query["next"]
    assert report["finished"]
    assert (report["written_checked"], report["lms_assignments"]) == (30, 28)
    assert report["drift"] == {"lms_assignment_missing": 2, "lms_completion_missing": 0, "lms_unknown_write": 0}
    assert report["queued"] == 2
    await settled(runtime)
    now = stackone.assignments(ACCOUNT)
    assert len(now) == 30
    assert Counter(a["user_id"] for a in now) == Counter(a["user_id"] for a in written)
    assert stackone.violations == []


async def test_an_assignment_written_live_while_the_lms_is_listed_is_no_unknown_write(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A webhook for a new person arrives while ``reconcile --lms`` is listing the LMS (the listing
    takes minutes on a large account) and the worker writes it meanwhile: the listing shows it, and
    the pass knows it for lmsbridge's own (before: reported as a write lmsbridge has no record of,
    because what lmsbridge holds was read before the listing began)."""
    people = [f"early{i}@acme.example" for i in range(3)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    late = stackone.add_user(ACCOUNT, "late@acme.example")
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    await assigned(sender, runtime, people, "e")
    assert len(stackone.assignments(ACCOUNT)) == 3
    stackone.fail_next(0, delay=3.0, path_contains="/unified/lms/assignments")  # the listing's answer waits
    requests = len(stackone.requests)

    check = asyncio.create_task(reconcile_command(settings, lms=True, as_json=True))
    while not any(r.path == "/unified/lms/assignments" for r in stackone.requests[requests:]):
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    event = exec_event("assignment.created", exec_assignment("late", "late@acme.example", status="not_started"))
    assert (await sender.post("acme-sales", event))[0] == 202
    while late not in {a["user_id"] for a in stackone.assignments(ACCOUNT)}:
        await asyncio.sleep(0.05)
    assert time.monotonic() - asked < 2.5  # written while the listing's answer was still waiting
    assert await check == 0
    report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    assert report["finished"]
    assert report["lms_assignments"] == 4  # the late assignment was listed
    assert report["drift"] == {"lms_assignment_missing": 0, "lms_completion_missing": 0, "lms_unknown_write": 0}
    assert report["unknown_writes"] == []
