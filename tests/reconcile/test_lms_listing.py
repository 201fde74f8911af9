"""LMS side: a page of StackOne's lists that fails transiently is asked again, not the whole listing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.settings import Settings
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.stackone import RecordedRequest, StackOneStandIn
from tests.pipeline.conftest import STACKONE_KEY
from tests.reconcile.conftest import ACCOUNT, json_out

LIST = "/unified/lms/assignments"


async def assigned_in_the_lms(stackone: StackOneStandIn, n: int) -> None:
    """``n`` assignments of one person in the LMS, written there through StackOne's API."""
    user = stackone.add_user(ACCOUNT, "many@acme.example")
    auth = base64.b64encode(f"{STACKONE_KEY}:".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "x-account-id": ACCOUNT, "User-Agent": "someone-else/1.0"}
    gate = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = {"learning_object_external_reference": f"course-{i}", "status": {"value": "pending"}, "progress": 0}
            async with (
                gate,
                session.post(f"{stackone.url}/unified/lms/users/{user}/assignments", json=body, headers=headers) as r,
            ):
                assert r.status == 201

        await asyncio.gather(*(one(i) for i in range(n)))


async def migrated(settings: Settings) -> None:
    """The settings' database at the newest revision (the pass refuses any other)."""
    engine = create_engine(settings.database_url.get_secret_value())
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def dry_pass(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``reconcile --lms --dry-run --json``: its exit code and the account's report."""
    code = await reconcile_command(settings, lms=True, dry_run=True, as_json=True)
    return code, json_out(capsys.readouterr().out)["accounts"][ACCOUNT]


def cursors_after_failures(listed: list[RecordedRequest]) -> list[tuple[str | None, str | None]]:
    """(cursor of the failed request, cursor of the request after it) for each failed request."""
    return [
        (r.query.get("next"), listed[i + 1].query.get("next")) for i, r in enumerate(listed[:-1]) if r.status != 200
    ]


async def test_a_2000_page_listing_with_a_503_in_every_500_calls_finishes_asking_only_the_failed_pages_again(
    reconcile_settings: Callable[..., Settings], stackone: StackOneStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """2,000 pages of assignments, StackOne answering every 500th call 503: each failed page is asked
    again with its own cursor and the pass finishes with every row read, in 2,004 calls. Before, a
    failure read the listing again from page 1, six times at most, so it never got past page 500
    and the pass stopped after 3,000 calls."""
    settings = reconcile_settings(stackone={"page_size": 1})
    await migrated(settings)
    await assigned_in_the_lms(stackone, 2000)
    stackone.fail_next(503, times=10**6, every=500, path_contains=LIST)
    requests = len(stackone.requests)

    code, report = await dry_pass(settings, capsys)

    listed = [r for r in stackone.requests[requests:] if r.path == LIST]
    assert (code, report["finished"], report["lms_assignments"]) == (0, True, 2000)
    assert [r.status for r in listed].count(503) == 4
    assert len(listed) == 2004
    assert all(failed == next_one for failed, next_one in cursors_after_failures(listed))


async def test_a_page_answered_429_or_408_is_asked_again_after_its_retry_after_once(
    reconcile_settings: Callable[..., Settings], stackone: StackOneStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thirty assignments ten to a page: the second page answered 429 with ``Retry-After: 1``, the
    third 408 with ``Retry-After: 30``. Each is asked again with its own cursor: after the 429 in
    about a second (the rate limiter's pause, not that plus a sleep of its own), after the 408 within
    ``reconcile.max_wait_seconds`` (0.05 s here, whatever it says). Before, each failure read the
    listing again from its first page, and the 408's retry waited the whole 30 s."""
    settings = reconcile_settings(stackone={"page_size": 10})
    await migrated(settings)
    await assigned_in_the_lms(stackone, 30)
    stackone.fail_next(429, retry_after=1, path_contains=LIST, query_has="next")
    stackone.fail_next(408, retry_after=30, path_contains=LIST, query_has="next")
    requests = len(stackone.requests)

    code, report = await dry_pass(settings, capsys)

    listed = [r for r in stackone.requests[requests:] if r.path == LIST]
    assert (code, report["finished"], report["lms_assignments"]) == (0, True, 30)
    assert [r.status for r in listed] == [200, 429, 408, 200, 200]
    assert [r.query.get("next") for r in listed][1:4] == [listed[1].query.get("next")] * 3
    after_429, after_408 = listed[2].time - listed[1].time, listed[3].time - listed[2].time
    assert 1.0 <= after_429 < 1.9  # the Retry-After, once
    assert after_408 < 1.0  # max_wait_seconds, not the 30 s asked (before: 30 s)


async def test_a_page_is_tried_as_many_times_as_settings_say_then_the_pass_stops(
    reconcile_settings: Callable[..., Settings], stackone: StackOneStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``reconcile.max_attempts = 3`` a second page failing three times in a row (503) is tried
    three times and the pass stops, exit 1, naming the failure. Before, the count was six, whatever
    the settings, and each try read the listing again from page 1 (so three failures went unseen)."""
    settings = reconcile_settings(stackone={"page_size": 10}, reconcile={"max_attempts": 3})
    await migrated(settings)
    await assigned_in_the_lms(stackone, 30)
    stackone.fail_next(503, times=3, path_contains=LIST, query_has="next")
    requests = len(stackone.requests)

    code, report = await dry_pass(settings, capsys)

    listed = [r for r in stackone.requests[requests:] if r.path == LIST]
    assert [r.status for r in listed] == [200, 503, 503, 503]
    assert (code, report["finished"]) == (1, False)
    assert "HTTP 503" in report["error"]
