"""Platform side under stress: failing platform APIs, malformed pages, races with webhooks, dry runs, bad settings."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_event
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT, json_out
from tests.reconcile.test_exec import tenant

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


def once_each(stackone: StackOneStandIn) -> tuple[int, int]:
    """(assignments, completions) in the LMS, asserting none is there twice and nothing was refused as a duplicate."""
    a = Counter((x["user_id"], x["body"]["learning_object_external_reference"]) for x in stackone.assignments())
    c = Counter((x["user_id"], x["body"]["learning_object_external_reference"]) for x in stackone.completions())
    assert max(a.values(), default=1) == 1
    assert max(c.values(), default=1) == 1
    assert stackone.conflicts == 0  # no second create was even tried
    return len(a), len(c)


def add_people(stackone: StackOneStandIn, exec_api: ExecStandIn, assignments: list[dict[str, Any]]) -> None:
    """Put the tenant in Exec and its people in the LMS (each once)."""
    for a in assignments:
        exec_api.put(a)
    for email in sorted({a["user"]["email"] for a in assignments}):
        stackone.add_user(ACCOUNT, email)


def expected(assignments: list[dict[str, Any]]) -> tuple[int, int]:
    """(assignments, completions) an Exec tenant should leave in the LMS."""
    return len(assignments), sum(1 for a in assignments if a["status"] in ("completed", "did_not_pass"))


async def test_a_pass_racing_the_same_events_as_webhooks_writes_each_once(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
) -> None:
    """Every assignment arrives twice at the same moment, once from the pass and once as its
    webhooks (created, then completed): the LMS still holds each assignment and completion once."""
    assignments = tenant(150, seed=3)
    add_people(stackone, exec_api, assignments)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    sender = sender_for(runtime)

    async def webhooks() -> None:
        for a in assignments:
            await sender.post("acme-sales", exec_event("assignment.created", {**a, "status": "not_started"}))
            if a["status"] in ("completed", "did_not_pass"):
                await sender.post("acme-sales", exec_event("assignment.completed", a))

    code, _ = await asyncio.gather(reconcile_command(settings, sources=["acme-sales"], as_json=True), webhooks())
    assert code == 0
    await settled(runtime, timeout=60)
    assert once_each(stackone) == expected(assignments)


async def test_platform_apis_failing_30_percent_still_finish_and_write_nothing_twice(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both platforms answer 30 % of calls with 500 or 429 (Retry-After): the pass retries, finishes,
    and the LMS holds each record once; a second pass under the same faults writes nothing."""
    assignments = tenant(300, seed=4)
    for a in assignments:
        exec_api.put(a)
    teams = [make_team_assignment(3, assignment_id=f"team{i}", target_id=f"topic-{i}", title=f"T{i}") for i in range(6)]
    for doc in teams:
        platform.add_assignment(doc)
    for email in {a["user"]["email"] for a in assignments} | {m["email"] for m in teams[0]["userProgress"]}:
        stackone.add_user(ACCOUNT, email)
    exec_api.set_failure_rate(0.3)
    platform.set_failure_rate(0.3, seed=5)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)

    assert await reconcile_command(settings, as_json=True) == 0
    out = json_out(capsys.readouterr().out)
    assert out["finished"]
    assert out["sources"]["acme-sales"]["retries"] > 0
    assert exec_api.failures > 0
    await settled(runtime, timeout=60)
    n_assignments, n_completions = once_each(stackone)
    assert (n_assignments, n_completions) == (300 + 18, expected(assignments)[1])
    writes = stackone.writes()

    assert await reconcile_command(settings, as_json=True) == 0
    second = json_out(capsys.readouterr().out)
    assert sum(s["events_queued"] for s in second["sources"].values()) == 0
    await settled(runtime)
    assert stackone.writes() == writes


async def test_a_malformed_page_stops_the_source_naming_the_field_and_merges_nothing_of_it(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Page 2 of 3 holds an assignment whose status 001 does not list: exit 1, the error names
    ``data[7].status``, page 1 is merged, nothing of page 2 is, page 3 is never asked for."""
    assignments = tenant(300, seed=5)
    add_people(stackone, exec_api, assignments)

    def corrupt(doc: dict[str, Any]) -> dict[str, Any]:
        doc["data"][7] = {**doc["data"][7], "status": "archived"}
        return doc

    exec_api.corrupt_page(2, corrupt)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 1
    report = json_out(capsys.readouterr().out)["sources"]["acme-sales"]
    assert not report["finished"]
    assert report["stopped_at"] == "after page 1 of 3"
    assert "page 2: malformed" in report["error"]
    assert "data[7].status" in report["error"]
    assert [q["page"] for q in exec_api.requests] == ["1", "2"]
    await settled(runtime)
    assert once_each(stackone)[0] == 100  # page 1 only


async def test_a_platform_that_says_there_are_more_pages_than_it_has_stops_the_source_at_the_first_empty_one(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exec holds 2 pages but says 1,000,000 on every page: the pass merges pages 1-2, asks for
    page 3, finds it empty and stops the source there (exit 1, the error names the inconsistent
    paging), instead of asking for every page the platform claims."""
    assignments = tenant(200, seed=8)
    add_people(stackone, exec_api, assignments)

    def endless(doc: dict[str, Any]) -> dict[str, Any]:
        doc["pagination"] = {**doc["pagination"], "total_pages": 1_000_000}
        return doc

    for page in range(1, 60):
        exec_api.corrupt_page(page, endless)
    settings = reconcile_settings()
    runtime = await start_runtime(settings)
    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 1
    report = json_out(capsys.readouterr().out)["sources"]["acme-sales"]
    assert not report["finished"]
    assert "page 3: empty, though total_pages says 1000000" in report["error"]
    assert [q["page"] for q in exec_api.requests] == ["1", "2", "3"]
    await settled(runtime)
    assert once_each(stackone)[0] == 200


async def test_a_platform_down_mid_pass_keeps_what_was_queued_and_says_where_it_stopped(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exec answers page 3 with 503 until the tries run out: exit 1, stopped at page 3, pages 1-2
    merged and written; the next pass (Exec back) finishes the rest and repeats nothing."""
    assignments = tenant(300, seed=6)
    add_people(stackone, exec_api, assignments)
    settings = reconcile_settings(reconcile={"max_attempts": 3})
    runtime = await start_runtime(settings)
    exec_api.fail_page(3)
    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 1
    report = json_out(capsys.readouterr().out)["sources"]["acme-sales"]
    assert report["stopped_at"] == "after page 2 of 3"
    assert "page 3: still failing after 3 tries" in report["error"]
    await settled(runtime)
    assert once_each(stackone)[0] == 200

    exec_api.heal()
    assert await reconcile_command(settings, sources=["acme-sales"], as_json=True) == 0
    await settled(runtime)
    assert once_each(stackone) == expected(assignments)


async def test_a_dry_run_reports_drift_and_changes_nothing(
    reconcile_settings: Callable[..., Any],
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--dry-run against an empty database: every assignment is reported missing, nothing is stored or queued."""
    assignments = tenant(120, seed=7)
    for a in assignments:
        exec_api.put(a)
    settings = reconcile_settings()
    repo = Repository(create_engine(settings.database_url.get_secret_value()))
    await upgrade(repo.engine)  # as `lmsbridge migrate` leaves it: reconcile refuses a schema not migrated
    await repo.close()
    assert await reconcile_command(settings, sources=["acme-sales"], dry_run=True, as_json=True) == 0
    out = json_out(capsys.readouterr().out)
    assert out["dry_run"]
    report = out["sources"]["acme-sales"]
    assert report["drift"]["record_missing"] == 120
    assert report["events_queued"] == 0
    repo = Repository(create_engine(settings.database_url.get_secret_value()))
    assert await repo.stats.status_counts() == {}
    assert await repo.stats.inbox_count() == 0
    await repo.close()


async def test_bad_settings_exit_2_with_one_line_naming_the_key(
    reconcile_settings: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown source, or one without its platform API configured, is exit 2 naming the key."""
    settings = reconcile_settings()
    assert await reconcile_command(settings, sources=["nope"]) == 2
    assert capsys.readouterr().err.strip() == "lmsbridge: config: sources.nope: no such source"
    bare = settings.model_copy(
        update={"sources": {"x": settings.sources["acme-sales"].model_copy(update={"api_base_url": None})}}
    )
    assert await reconcile_command(bare, sources=["x"]) == 2
    assert "sources.x.api_base_url" in capsys.readouterr().err
