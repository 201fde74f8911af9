"""LMS side with two open assignments of one training: a completion the LMS lost is written again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.domain.test_cycles import OVERLAP_OPEN
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]

EMAIL = "jane.smith@acme.example"
PROGRAM = datetime(2026, 1, 5, 9, tzinfo=UTC)  # a1: assigned by a program in January, still open
MANUAL = datetime(2026, 6, 1, 9, tzinfo=UTC)  # a2: assigned again by hand on June 1


@pytest.mark.xfail(strict=True, reason=OVERLAP_OPEN)
async def test_a_lost_pass_is_written_again_as_the_pass_not_as_a_later_assignments_fail(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two open assignments of the scenario (a1 from January, a2 of June 1). Jane passes on June 3
    (a1: written); a2's Fail of June 2 is delivered late (a Fail after a Pass: nothing written).
    The LMS then loses the Pass and ``reconcile --lms`` finds it missing: the Pass lmsbridge wrote
    should be written again. Known defect: merge made a2's Fail the record's completion (its
    assignment is newer, though no new cycle), and the reopened row writes the Fail."""
    stackone.add_user(ACCOUNT, EMAIL)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    passed = exec_assignment("a1", EMAIL, status="completed", best_score=85.0, created_at=PROGRAM)
    pass_at = MANUAL + timedelta(days=2)
    assert (await sender.post("acme-sales", exec_event("assignment.completed", passed, at=pass_at)))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    failed = exec_assignment("a2", EMAIL, status="did_not_pass", best_score=40.0, created_at=MANUAL)
    fail_at = MANUAL + timedelta(days=1)
    assert (await sender.post("acme-sales", exec_event("assignment.completed", failed, at=fail_at)))[0] == 202
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    [written] = stackone.completions(ACCOUNT)
    assert written["body"]["result"] == {"value": "Pass"}
    stackone.remove("completion", written["id"])

    assert await reconcile_command(settings, lms=True, as_json=True) == 0
    report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    assert report["drift"]["lms_completion_missing"] == 1
    await settled(runtime)
    rows = [(c["body"]["result"]["value"], c["body"].get("completed_at")) for c in stackone.completions(ACCOUNT)]
    assert rows == [("Pass", "2026-06-03T09:00:00.000Z")]
    assert stackone.violations == []
