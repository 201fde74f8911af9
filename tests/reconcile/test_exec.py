"""Platform side, Exec (001): a tenant whose webhooks partly never arrived is brought to the truth."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]
SCENARIOS = ("discovery-call", "cold-call", "negotiation", "renewal", "pricing")


def tenant(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` Exec assignments, one per (person, scenario), in every status 001 lists."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        email = f"rep{i // len(SCENARIOS):03d}@acme.example"
        scenario = SCENARIOS[i % len(SCENARIOS)]
        status = rng.choice(["completed", "completed", "did_not_pass", "not_started", "in_progress", "past_due"])
        score = float(rng.randint(40, 100)) if status in ("completed", "did_not_pass") else None
        out.append(
            exec_assignment(
                f"asg{i:04d}", email, scenario=scenario, name=scenario.title(), status=status, best_score=score
            )
        )
    return out


def lms_truth(
    stackone: StackOneStandIn, users: dict[str, str]
) -> tuple[list[tuple[str, str]], dict[tuple[str, str], Any]]:
    """(e-mail, reference) of every assignment in the LMS, and every completion's (result, score) by the same key."""
    by_id = {uid: email for email, uid in users.items()}
    assignments = [
        (by_id[a["user_id"]], a["body"]["learning_object_external_reference"]) for a in stackone.assignments()
    ]
    completions: dict[tuple[str, str], Any] = {}
    for c in stackone.completions():
        key = (by_id[c["user_id"]], c["body"]["learning_object_external_reference"])
        assert key not in completions, f"two completions for {key}"
        completions[key] = (c["body"]["result"]["value"], c["body"].get("score", {}).get("percentage"))
    return assignments, completions


async def test_one_pass_brings_the_lms_to_exec_truth_and_a_second_writes_nothing(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """500 assignments, 10 % never webhooked and 5 % of completions lost: one reconcile makes the LMS
    hold every assignment once (begun ones it creates ``in_progress``) and every completion once
    with the right result and score; those begun since their webhook are updated records (no LMS
    write: assignments are never updated); Exec is called once per page; a second reconcile finds
    everything in step and causes no StackOne write."""
    assignments = tenant(500)
    for a in assignments:
        exec_api.put(a)
    users = {e: stackone.add_user(ACCOUNT, e) for e in sorted({a["user"]["email"] for a in assignments})}
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    rng = random.Random(2)
    never = set(rng.sample(range(500), 50))
    finished = [i for i, a in enumerate(assignments) if a["status"] in ("completed", "did_not_pass") and i not in never]
    lost = set(rng.sample(finished, round(len(finished) * 0.05)))
    for i, a in enumerate(assignments):
        if i in never:
            continue
        created = {**a, "status": "not_started", "best_score": None}
        assert (await sender.post("acme-sales", exec_event("assignment.created", created)))[0] == 202
        if i in finished and i not in lost:
            assert (await sender.post("acme-sales", exec_event("assignment.completed", a)))[0] == 202
    await settled(runtime, timeout=60)
    before, _ = lms_truth(stackone, users)
    assert len(before) == 450
    writes_before = stackone.writes()

    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 0
    report = json_out(capsys.readouterr().out)["sources"]["acme-sales"]
    assert report["finished"]
    assert report["platform_calls"] == report["pages"] == 5
    assert report["drift"]["record_missing"] == 50
    assert report["drift"]["completion_missing"] == len(lost)
    begun = [i for i, a in enumerate(assignments) if a["status"] == "in_progress" and i not in never]
    assert report["drift"]["updated"] == len(begun) > 0
    assert report["in_step"] == 450 - len(lost) - len(begun)
    await settled(runtime, timeout=60)

    lms_assignments, lms_completions = lms_truth(stackone, users)
    expected = sorted((a["user"]["email"], f"exec:scenario:{a['scenario']['slug']}") for a in assignments)
    assert sorted(lms_assignments) == expected  # every assignment, once
    created_as = {
        (a["user_id"], a["body"]["learning_object_external_reference"]): a["body"]["status"]["value"]
        for a in stackone.assignments()[450:]
    }
    begun_or_done = ("in_progress", "completed", "did_not_pass")
    assert created_as == {
        (users[a["user"]["email"]], f"exec:scenario:{a['scenario']['slug']}"): (
            "in_progress" if a["status"] in begun_or_done else "pending"
        )
        for a in (assignments[i] for i in never)
    }
    truth = {
        (a["user"]["email"], f"exec:scenario:{a['scenario']['slug']}"): (
            "Pass" if a["status"] == "completed" else "Fail",
            a["best_score"],
        )
        for a in assignments
        if a["status"] in ("completed", "did_not_pass")
    }
    assert lms_completions == truth  # every completion, once, with its result and score
    writes = stackone.writes()
    never_done = sum(1 for i in never if assignments[i]["status"] in ("completed", "did_not_pass"))
    assert writes - writes_before == 50 + never_done + len(lost)  # the missing writes only: no content again

    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 0
    second = json_out(capsys.readouterr().out)["sources"]["acme-sales"]
    assert second["events_queued"] == 0
    assert second["in_step"] == 500
    assert exec_api.list_calls == 10
    await settled(runtime, timeout=30)
    assert stackone.writes() == writes
    assert stackone.violations == []
