"""Platform side, the security-training platform (003): one list call, details only where something moved."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from lmsbridge.reconcile import periodic
from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.storage.reconcile import ReconcileStore
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, limeplate_created
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]
DONE_AT = datetime(2026, 6, 4, 10, 18, 42, tzinfo=UTC)


def listed(doc: dict[str, Any]) -> dict[str, Any]:
    """The list entry of a detail document (what the webhook carries)."""
    return {k: v for k, v in doc.items() if k not in ("userProgress", "note", "assignedByName")}


async def test_details_are_read_only_for_the_assignments_that_moved(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Team assignments: one never webhooked, one whose member completed without a webhook, one
    unchanged. The pass lists once and reads the members of the first two only; the LMS gets the
    missing assignments and the one completion; a second pass reads no detail and writes nothing."""
    never = make_team_assignment(4, assignment_id="asg-never", target_id="phishing", title="Phishing")
    moved = make_team_assignment(4, assignment_id="asg-moved", target_id="sql-injection", title="SQL Injection")
    quiet = make_team_assignment(4, assignment_id="asg-quiet", target_id="xss", title="XSS")
    inactive = {**make_team_assignment(3, assignment_id="asg-gone", target_id="csrf", title="CSRF"), "isActive": False}
    for doc in (never, moved, quiet, inactive):
        platform.add_assignment(doc)
    users = {m["email"]: stackone.add_user(ACCOUNT, m["email"]) for m in never["userProgress"]}
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for doc in (moved, quiet):
        assert (await sender.post("acme-security", limeplate_created(listed(doc))))[0] == 202
    await settled(runtime)
    assert len(stackone.assignments()) == 8
    platform.set_progress("asg-moved", "member001@acme.example", 100, DONE_AT)
    platform.set_progress("asg-moved", "member002@acme.example", 50)
    details_before = len(platform.detail_calls())

    assert await reconcile_command(settings, sources=["acme-security"], as_json=True) == 0
    report = json_out(capsys.readouterr().out)["sources"]["acme-security"]
    assert platform.detail_calls()[details_before:] == ["asg-never", "asg-moved"]
    assert report["platform_calls"] == 3
    assert report["detail_calls"] == 2
    assert report["skipped_inactive"] == 1
    assert report["drift"] == {"record_missing": 4, "completion_missing": 1, "updated": 1}
    assert report["in_step"] == 4 + 2  # the quiet team, and two unchanged members of the moved one
    await settled(runtime)

    refs = sorted(
        (a["user_id"], a["body"]["learning_object_external_reference"]) for a in stackone.assignments(ACCOUNT)
    )
    expected = sorted(
        (uid, f"limeplate:topic:{t}") for uid in users.values() for t in ("phishing", "sql-injection", "xss")
    )
    assert refs == expected  # nothing for the inactive assignment lmsbridge never saw
    [completion] = stackone.completions(ACCOUNT)
    assert completion["user_id"] == users["member001@acme.example"]
    assert completion["body"]["learning_object_external_reference"] == "limeplate:topic:sql-injection"
    assert completion["body"]["result"] == {"value": "Pass"}
    assert completion["body"]["completed_at"].startswith("2026-06-04T10:18:42")
    writes, calls = stackone.writes(), len(platform.requests)

    assert await reconcile_command(settings, sources=["acme-security"], as_json=True) == 0
    second = json_out(capsys.readouterr().out)["sources"]["acme-security"]
    assert second["platform_calls"] == 1  # a quiet day: the list only
    assert len(platform.requests) == calls + 1
    assert second["events_queued"] == 0
    await settled(runtime)
    assert stackone.writes() == writes
    assert stackone.violations == []


async def test_a_malformed_list_stops_the_source_naming_the_field(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A list entry whose ``completedAssignees`` is not a number: exit 1, the error names
    ``[1].completedAssignees``, no member is read and nothing is queued."""
    for i in range(3):
        platform.add_assignment(make_team_assignment(2, assignment_id=f"asg-{i}", target_id=f"t{i}", title=f"T{i}"))
    broken = listed(make_team_assignment(2, assignment_id="asg-1", target_id="t1", title="T1"))
    platform.add_assignment({**broken, "completedAssignees": "three"})  # no members: served as stored
    settings = reconcile_settings()
    await start_runtime(settings, receiver=False)
    assert await reconcile_command(settings, sources=["acme-security"], as_json=True) == 1
    report = json_out(capsys.readouterr().out)["sources"]["acme-security"]
    assert "[1].completedAssignees" in report["error"]
    assert (report["detail_calls"], report["events_queued"]) == (0, 0)
    assert platform.detail_calls() == []
    assert stackone.assignments() == []


async def test_an_unusable_member_row_is_skipped_and_the_rest_reconciled(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A team of 4 never webhooked whose 2nd row has no e-mail: the pass succeeds, the 3 usable
    members get their assignment, and one warning names the assignment, 1 skipped row and
    ``userProgress[1].email``. Before the fix the detail failed validation as a whole: exit 1
    naming ``userProgress[1].email``, the source's pass stopped and nobody was assigned."""
    team = make_team_assignment(4, assignment_id="asg-one-bad", target_id="phishing", title="Phishing")
    rows = team["userProgress"]
    rows[1] = {k: v for k, v in rows[1].items() if k != "email"}
    platform.add_assignment(team)
    users = {r["email"]: stackone.add_user(ACCOUNT, r["email"]) for r in rows if "email" in r}
    settings = reconcile_settings()
    runtime = await start_runtime(settings, receiver=False)
    with capture_logs() as logs:
        assert await reconcile_command(settings, sources=["acme-security"], as_json=True) == 0
    report = json_out(capsys.readouterr().out)["sources"]["acme-security"]
    assert report["drift"] == {"record_missing": 3, "completion_missing": 0, "updated": 0}
    [warning] = [e for e in logs if e["event"] == "limeplate.members_skipped"]
    assert (warning["assignment_id"], warning["skipped"], warning["first_problem"]) == (
        "asg-one-bad",
        1,
        "userProgress[1].email",
    )
    await settled(runtime)
    assert sorted(a["user_id"] for a in stackone.assignments(ACCOUNT)) == sorted(users.values())


async def test_a_workers_pass_counts_the_member_rows_it_skipped_by_source(
    reconcile_settings: Callable[..., Any], start_runtime: Start, stackone: StackOneStandIn, platform: LimeplateStandIn
) -> None:
    """A worker's periodic pass over a team of 4 never webhooked whose 2nd row has no e-mail counts
    that row in ``lmsbridge_member_rows_skipped_total{source}``, as webhook expansion does (before:
    only the warning line said so)."""
    team = make_team_assignment(4, assignment_id="asg-one-bad", target_id="phishing", title="Phishing")
    rows = team["userProgress"]
    rows[1] = {k: v for k, v in rows[1].items() if k != "email"}
    platform.add_assignment(team)
    for row in rows:
        if "email" in row:
            stackone.add_user(ACCOUNT, row["email"])
    settings = reconcile_settings(reconcile={"interval": 3600.0})
    runtime = await start_runtime(settings, receiver=False)
    assert runtime.repo is not None
    assert runtime.session is not None
    assert runtime.limiter is not None
    store = ReconcileStore(runtime.repo.engine)
    try:
        ran = await periodic.reconcile_round(
            settings, store, runtime.broker, runtime.session, runtime.metrics, runtime.limiter, "w1"
        )
    finally:
        await store.close()
    assert ran
    labels = {"source": "acme-security"}
    assert runtime.metrics.registry.get_sample_value("lmsbridge_member_rows_skipped_total", labels) == 1
    assert await settled(runtime) == {ACCOUNT: {"synced": 3}}


async def test_an_assignment_with_no_usable_member_row_still_stops_the_source(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every row of a team lacks an e-mail: exit 1, the error names ``userProgress[0].email`` and
    nothing is queued, as before the fix (which only spares assignments with a usable row)."""
    team = make_team_assignment(2, assignment_id="asg-all-bad")
    team["userProgress"] = [{k: v for k, v in r.items() if k != "email"} for r in team["userProgress"]]
    platform.add_assignment(team)
    settings = reconcile_settings()
    await start_runtime(settings, receiver=False)
    assert await reconcile_command(settings, sources=["acme-security"], as_json=True) == 1
    report = json_out(capsys.readouterr().out)["sources"]["acme-security"]
    assert "userProgress[0].email" in report["error"]
    assert report["events_queued"] == 0
    assert stackone.assignments() == []
