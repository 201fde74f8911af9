"""LMS side: how the pass reads the LMS's rows, and what it may conclude from them."""

from __future__ import annotations

import io
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rich.console import Console

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.reconcile.status import last_passes, print_passes
from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]
REF = "learning_object_external_reference"


def sync_rows(settings: Settings) -> list[tuple[str, str | None]]:
    """(status, reason) of every sync row, read from the database file."""
    db = sqlite3.connect(settings.database_url.get_secret_value().split("///", 1)[1])
    try:
        return [(str(s), r) for s, r in db.execute("SELECT status, reason FROM sync_state ORDER BY record_id")]
    finally:
        db.close()


async def test_rows_listed_without_a_user_or_a_reference_are_skipped_and_license_no_write(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Three people with completions written: the LMS lists one completion without its learning
    object reference and one assignment without its user id (the spec lets both be null), and has
    really lost a third person's completion. The pass reports the two rows skipped and the two writes
    they may be as unverified, not missing, and reopens only the lost completion, which is written
    again once. Before, the unreadable rows were dropped unread and their writes reopened: the
    person's completion was written a second time on every pass."""
    people = [f"rows{i}@acme.example" for i in range(3)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for i, email in enumerate(people):
        done = exec_assignment(f"r{i}", email, status="completed", best_score=70.0 + i)
        assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)
    unread, lost, _ = stackone.completions(ACCOUNT)
    unread["row"][REF] = None  # the provider maps it by its own id only
    unread["row"]["learning_object_id"] = "cnt-exec:scenario:discovery-call"
    stackone.assignments(ACCOUNT)[2]["row"]["user_id"] = None
    stackone.remove("completion", lost["id"])

    reports = []
    for _ in range(2):
        assert await reconcile_command(settings, lms=True, as_json=True) == 0
        reports.append(json_out(capsys.readouterr().out)["accounts"][ACCOUNT])
        await settled(runtime)

    completions = Counter(c["user_id"] for c in stackone.completions(ACCOUNT))
    assert sorted(completions.values()) == [1, 1, 1]  # the lost one written again, none twice
    assert stackone.conflicts == 0
    figures = [
        (r.get("unreadable_rows"), r.get("unverified"), r["drift"]["lms_completion_missing"], r["reopened"])
        for r in reports
    ]
    assert figures == [(2, 2, 1, 1), (2, 2, 0, 0)]
    assert await reconcile_command(settings, lms=True) == 0
    printed = capsys.readouterr().out
    assert f"{ACCOUNT}: 2 LMS rows without a user id or learning object reference, skipped" in printed
    assert sync_rows(settings) == [("synced", None)] * 3
    assert stackone.violations == []


async def test_a_create_checked_against_a_row_without_its_reference_is_not_written_again(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
) -> None:
    """An LMS listing its rows without their learning object reference answers a completion's create
    408 after writing it: the check lists a completion with the same result, score and time but no
    reference, which may be this one, so the record is dead-lettered as ``lms_row_unreadable`` and
    nothing is written twice. Before, the row did not count, and the retry after the lease wrote a
    second completion."""
    stackone.add_user(ACCOUNT, "unref@acme.example")
    stackone.lists_without_reference = True
    stackone.fail_next(408, write_before_failing=True, path_contains="/completions", method="POST")
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    done = exec_assignment("u1", "unref@acme.example", status="completed", best_score=88.0)
    assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)

    assert len(stackone.completions(ACCOUNT)) == 1
    assert sync_rows(settings) == [("dead", "lms_row_unreadable")]
    creates = [r for r in stackone.requests if r.method == "POST" and r.path.endswith("/completions")]
    assert len(creates) == 1


async def test_a_retakes_pass_lost_in_the_lms_is_found_behind_the_old_fail_and_written_again_once(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Fail written, then the retake's better Pass; the LMS loses the Pass. The pass compares each
    listed completion with the one lmsbridge recorded as written (result, score, time), so the Fail
    still listed does not stand for it: the completion is missing, the Pass is written again once,
    and the next pass is in step. Another person's retake, on an LMS keeping only the day and whole
    percents, is in step throughout. Before, completions matched on (person, learning object): the
    Fail counted as the Pass, nothing was found, and the LMS showed the person failed for good."""
    stackone.add_user(ACCOUNT, "retake@acme.example")
    stackone.add_user(ACCOUNT, "coarse@acme.example")
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for result, score in (("did_not_pass", 40.0), ("completed", 95.4)):
        for email in ("retake@acme.example", "coarse@acme.example"):
            stackone.completions_keep_day_and_whole_percent = email.startswith("coarse")
            done = exec_assignment(f"t-{email[0]}", email, status=result, best_score=score)
            assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
            await settled(runtime)
    retake_user = stackone.completions(ACCOUNT)[0]["user_id"]
    [lost] = [
        c for c in stackone.completions(ACCOUNT) if c["user_id"] == retake_user and c["row"]["score"]["percentage"] > 90
    ]
    stackone.remove("completion", lost["id"])
    writes = stackone.writes()

    reports = []
    for _ in range(2):
        assert await reconcile_command(settings, lms=True, as_json=True) == 0
        reports.append(json_out(capsys.readouterr().out)["accounts"][ACCOUNT])
        await settled(runtime)

    results = sorted((c["user_id"] == retake_user, c["body"]["result"]["value"]) for c in stackone.completions(ACCOUNT))
    assert results == [(False, "Fail"), (False, "Pass"), (True, "Fail"), (True, "Pass")]
    assert [(r["drift"]["lms_completion_missing"], r["reopened"]) for r in reports] == [(1, 1), (0, 0)]
    assert stackone.writes() == writes + 1
    assert stackone.violations == []


async def test_written_records_whose_people_are_not_in_the_directory_are_reported_not_checked(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two assignments written; one person is then removed from the LMS (her next write is parked,
    her directory entry gone): the pass has no user id to look her record up by. The JSON counts 1
    written record checked and 1 not checked, the table says so in a column and a line, and
    ``status`` shows the pass as "not checked 1", not "in step". Before, she was counted as written
    checked (2) and the pass was "in step" though it compared nothing for her."""
    stackone.add_user(ACCOUNT, "stays@acme.example")
    gone = stackone.add_user(ACCOUNT, "gone@acme.example")
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for email in ("stays@acme.example", "gone@acme.example"):
        event = exec_event("assignment.created", exec_assignment(f"n-{email[0]}", email, status="not_started"))
        assert (await sender.post("acme-sales", event))[0] == 202
    await settled(runtime)
    stackone.delete_user(ACCOUNT, gone)
    for assignment in [a for a in stackone.assignments(ACCOUNT) if a["user_id"] == gone]:
        stackone.remove("assignment", assignment["id"])
    done = exec_assignment("n-g", "gone@acme.example", status="completed", best_score=90.0)
    assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)
    assert sync_rows(settings)[1] == ("parked", "user_not_found")

    assert await reconcile_command(settings, lms=True, as_json=True) == 0
    report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
    assert await reconcile_command(settings, lms=True) == 0
    table = capsys.readouterr().out
    passes = await last_passes(settings)
    shown = io.StringIO()
    print_passes(Console(file=shown, width=200), passes)

    assert (report["written_checked"], report["unknown_people"], report.get("not_checked")) == (1, 1, 1)
    assert report["drift"] == {"lms_assignment_missing": 0, "lms_completion_missing": 0, "lms_unknown_write": 0}
    assert f"{ACCOUNT}: 1 written records not checked: their people are not in the directory" in table
    assert passes[f"lms:{ACCOUNT}"].get("not_checked") == 1
    assert "not checked 1" in shown.getvalue()
    assert "in step" not in shown.getvalue()
