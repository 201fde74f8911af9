"""LMS side: the window the pass reads StackOne's lists in holds every write lmsbridge made there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from lmsbridge.domain.sync import iso
from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings
from lmsbridge.storage.tables import UtcDateTime, records, sync_state
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


def travel_back(settings: Settings, stackone: StackOneStandIn, days: int) -> datetime:
    """Everything written so far, as if it had been written ``days`` ago: every time lmsbridge keeps
    of its records and their writes, and the LMS's ``created_at`` / ``updated_at`` of its rows.
    Returns the instant the LMS's rows now carry."""
    then = datetime.now(UTC) - timedelta(days=days)
    for row in [r["row"] for r in stackone.assignments(ACCOUNT) + stackone.completions(ACCOUNT)]:
        row["created_at"] = row["updated_at"] = iso(then)
    url = settings.database_url.get_secret_value().replace("+aiosqlite", "")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table, keys in ((records, ("id",)), (sync_state, ("record_id", "account"))):
                times = [c.name for c in table.c if isinstance(c.type, UtcDateTime)]
                for row in conn.execute(sa.select(table)).mappings().all():
                    moved = {name: row[name] - timedelta(days=days) for name in times if row[name] is not None}
                    conn.execute(sa.update(table).where(*(table.c[k] == row[k] for k in keys)).values(moved))
    finally:
        engine.dispose()
    return then


async def test_assignments_written_days_before_their_completion_are_in_the_window_pass_after_pass(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Five assignments written three days ago, their completions today (the completions' syncs
    are the records' latest): ``reconcile --lms`` reads the LMS's lists from a day before the first
    write (four days ago), finds every write in step and reopens nothing, pass after pass. Before,
    the window began a day before the OLDEST LAST sync (yesterday), so all five assignments looked
    missing, were reopened and sent again (409) on every pass."""
    people = [f"early{i}@acme.example" for i in range(5)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for i, email in enumerate(people):
        event = exec_event("assignment.created", exec_assignment(f"w{i}", email, status="not_started"))
        assert (await sender.post("acme-sales", event))[0] == 202
    await settled(runtime)
    assigned_at = travel_back(settings, stackone, days=3)
    for i, email in enumerate(people):
        done = exec_assignment(f"w{i}", email, status="completed", best_score=90.0)
        assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)
    assert (len(stackone.assignments(ACCOUNT)), len(stackone.completions(ACCOUNT))) == (5, 5)
    writes, requests = stackone.writes(), len(stackone.requests)

    for _ in range(2):
        assert await reconcile_command(settings, lms=True, as_json=True) == 0
        report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
        assert report["finished"]
        assert (report["lms_assignments"], report["lms_completions"]) == (5, 5)
        assert report["drift"] == {"lms_assignment_missing": 0, "lms_completion_missing": 0, "lms_unknown_write": 0}
        assert report["reopened"] == 0
        await settled(runtime)
    sent = {
        r.query["filter[updated_after]"]
        for r in stackone.requests[requests:]
        if r.path in ("/unified/lms/assignments", "/unified/lms/completions")
    }
    [since] = sent
    assert datetime.fromisoformat(since) <= assigned_at - timedelta(days=1)
    assert stackone.writes() == writes
    assert stackone.conflicts == 0
    assert stackone.violations == []


async def test_a_write_a_listing_gap_hid_is_looked_for_in_the_persons_lists_never_written_twice(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An LMS that dates its rows by the training's own times (assigned and completed months before
    lmsbridge wrote them) leaves them out of the cross-user lists' window: the pass finds three
    assignments and completions missing and reopens them, and their syncs list each person's
    assignments and completions first, find them there and record them, writing nothing, pass after
    pass. Before, a reopened write was created blind: three 409s and three second completions on
    every pass."""
    people = [f"dated{i}@acme.example" for i in range(3)]
    users = [stackone.add_user(ACCOUNT, email) for email in people]
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)
    for i, email in enumerate(people):
        done = exec_assignment(f"d{i}", email, status="completed", best_score=80.0 + i)
        assert (await sender.post("acme-sales", exec_event("assignment.completed", done)))[0] == 202
    await settled(runtime)
    months_ago = iso(datetime.now(UTC) - timedelta(days=180))
    for row in [r["row"] for r in stackone.assignments(ACCOUNT) + stackone.completions(ACCOUNT)]:
        row["created_at"] = row["updated_at"] = months_ago
    writes, requests = stackone.writes(), len(stackone.requests)

    passes = []
    for _ in range(2):
        assert await reconcile_command(settings, lms=True, as_json=True) == 0
        report = json_out(capsys.readouterr().out)["accounts"][ACCOUNT]
        passes.append((report["drift"]["lms_assignment_missing"], report["drift"]["lms_completion_missing"]))
        assert report["reopened"] == 3
        await settled(runtime)

    syncs = [r for r in stackone.requests[requests:] if r.path.startswith("/unified/lms/users/")]
    assert [r.path for r in syncs if r.method != "GET"] == []
    assert passes == [(3, 3), (3, 3)]
    assert {(r.path.split("/")[4], r.path.split("/")[5]) for r in syncs} == {
        (user, kind) for user in users for kind in ("assignments", "completions")
    }
    assert len(stackone.assignments(ACCOUNT)) == len(stackone.completions(ACCOUNT)) == 3
    assert stackone.writes() == writes
    assert stackone.conflicts == 0
    counts = await runtime.repo.stats.status_counts() if runtime.repo is not None else {}
    assert counts == {ACCOUNT: {"synced": 3}}
    assert stackone.violations == []
