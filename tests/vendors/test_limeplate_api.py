"""``LimeplateApi`` against the real ``LimeplateStandIn`` server: members, and each failure's consequence."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from lmsbridge.errors import DeadLetter, RetryAfter, RetryLater
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.vendors import LimeplateApi

KEY = "scs_live_4b1d9e7a0c2f48e6"
ASSIGNMENT = "0b7c6f1e-5d2a-4c8e-9f31-7a2b4c6d8e01"


@pytest.fixture
async def standin() -> AsyncIterator[LimeplateStandIn]:
    """The platform's assignment API on a real port, serving a 12-member team assignment."""
    server = LimeplateStandIn(api_key=KEY)
    server.add_assignment(make_team_assignment(12, assignment_id=ASSIGNMENT))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session per test."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def api(session: aiohttp.ClientSession, base_url: str, key: str = KEY) -> LimeplateApi:
    """A client for ``base_url`` with a short timeout."""
    return LimeplateApi(session, base_url, SecretStr(key), timeout=5.0, user_agent="lmsbridge-test")


async def test_team_of_twelve_expands_to_twelve_people(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """A 12-member team assignment gives 12 ``PersonProgress``, each with its e-mail and progress."""
    people = await api(session, standin.url).members(ASSIGNMENT)
    assert len(people) == 12
    assert [p.email for p in people] == [f"member{i:03d}@acme.example" for i in range(12)]
    assert all(p.progress == 0 and p.passed is None and p.platform_user_id for p in people)
    assert standin.requests == [("GET", f"/api/public/v1/assignments/{ASSIGNMENT}")]


async def test_member_progress_and_completion_time_are_carried(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """Each member's ``progressPercent`` and ``completedAt`` (tz-aware) come through as reported."""
    document = make_team_assignment(2, assignment_id="asg-done")
    document["userProgress"][1].update(progressPercent=100, completedAt="2026-06-01T10:00:00Z")
    standin.add_assignment(document)
    first, second = await api(session, standin.url).members("asg-done")
    assert (first.progress, first.completed_at) == (0, None)
    assert second.progress == 100
    assert second.completed_at == datetime(2026, 6, 1, 10, tzinfo=UTC)
    assert second.completed_at.tzinfo is not None


async def test_assignment_id_is_escaped_in_the_path(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """An assignment id with path characters is sent as one escaped path segment."""
    document = make_team_assignment(1, assignment_id="a/b?c")
    standin.add_assignment(document)
    assert len(await api(session, standin.url).members("a/b?c")) == 1


async def test_two_server_errors_retry_then_succeed(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """A 500 twice: the first two calls raise ``RetryLater`` (not ``RetryAfter``), the third returns 12."""
    standin.fail_next(500, times=2)
    client = api(session, standin.url)
    for _ in range(2):
        with pytest.raises(RetryLater) as info:
            await client.members(ASSIGNMENT)
        assert not isinstance(info.value, RetryAfter)
        assert "500" in str(info.value)
    assert len(await client.members(ASSIGNMENT)) == 12


async def test_rate_limited_waits_as_told(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """429 with ``Retry-After: 7`` raises ``RetryAfter`` with a 7 second delay."""
    standin.fail_next(429, retry_after=7)
    with pytest.raises(RetryAfter) as info:
        await api(session, standin.url).members(ASSIGNMENT)
    assert info.value.delay == 7


async def test_rate_limited_without_retry_after_still_waits(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """429 without ``Retry-After`` still raises ``RetryAfter`` with a positive delay."""
    standin.fail_next(429)
    with pytest.raises(RetryAfter) as info:
        await api(session, standin.url).members(ASSIGNMENT)
    assert info.value.delay > 0


async def test_unknown_assignment_is_dead_lettered(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """404 cannot improve with retries: ``DeadLetter`` with reason ``assignment_not_found``."""
    with pytest.raises(DeadLetter) as info:
        await api(session, standin.url).members("no-such-assignment")
    assert info.value.reason == "assignment_not_found"


async def test_refused_key_retries_and_never_names_the_key(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """A wrong key (401) raises ``RetryLater`` whose message contains neither key."""
    wrong = "scs_live_wrongwrongwrong"
    with pytest.raises(RetryLater) as info:
        await api(session, standin.url, key=wrong).members(ASSIGNMENT)
    for text in (str(info.value), repr(info.value)):
        assert wrong not in text
        assert KEY not in text
        assert "wrongwrong" not in text


async def test_connection_refused_retries(session: aiohttp.ClientSession) -> None:
    """A closed port (connection refused) raises ``RetryLater``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryLater) as info:
        await api(session, f"http://127.0.0.1:{port}").members(ASSIGNMENT)
    assert KEY not in str(info.value)


def _drop_email(row: dict[str, Any]) -> Any:
    return {k: v for k, v in row.items() if k != "email"}


UNUSABLE_ROWS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "no e-mail": (_drop_email, "userProgress[3].email"),
    "null e-mail": (lambda row: {**row, "email": None}, "userProgress[3].email"),
    "e-mail a number": (lambda row: {**row, "email": 42}, "userProgress[3].email"),
    "e-mail without @": (lambda row: {**row, "email": "member003.acme.example"}, "userProgress[3].email"),
    "progress over 100": (lambda row: {**row, "progressPercent": 150}, "userProgress[3].progressPercent"),
    "row not an object": (lambda row: "member003@acme.example", "userProgress[3]"),
}


@pytest.mark.parametrize("breakage", UNUSABLE_ROWS.values(), ids=UNUSABLE_ROWS.keys())
async def test_one_unusable_member_row_is_skipped_and_the_rest_expand(
    standin: LimeplateStandIn,
    session: aiohttp.ClientSession,
    breakage: tuple[Callable[[dict[str, Any]], Any], str],
) -> None:
    """A 12-member team whose 4th row cannot be used gives the other 11 people, in order, and one
    warning naming the assignment, the count skipped and the first problem's field path, but no
    e-mail and no key. Before the fix the whole detail failed validation: ``DeadLetter
    ("platform_bad_response")`` and none of the 12 members was assigned."""
    spoil, path = breakage
    document = make_team_assignment(12, assignment_id="asg-one-bad")
    document["userProgress"][3] = spoil(document["userProgress"][3])
    standin.add_assignment(document)
    with capture_logs() as logs:
        people = await api(session, standin.url).members("asg-one-bad")
    assert [p.email for p in people] == [f"member{i:03d}@acme.example" for i in range(12) if i != 3]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings == [  # exactly these fields: no e-mail, no row values, no key
        {
            "event": "limeplate.members_skipped",
            "log_level": "warning",
            "assignment_id": "asg-one-bad",
            "skipped": 1,
            "usable": 11,
            "first_problem": path,
        }
    ]


async def test_several_unusable_rows_are_counted_and_the_first_is_named(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """Rows 2, 5 and 9 of 12 unusable (no e-mail, e-mail a list, null row): 9 people and ONE warning
    with ``skipped=3`` naming ``userProgress[2].email``. Before the fix: ``DeadLetter`` and nobody."""
    document = make_team_assignment(12, assignment_id="asg-three-bad")
    rows = document["userProgress"]
    rows[2] = _drop_email(rows[2])
    rows[5] = {**rows[5], "email": ["member005@acme.example"]}
    rows[9] = None
    standin.add_assignment(document)
    with capture_logs() as logs:
        people = await api(session, standin.url).members("asg-three-bad")
    assert len(people) == 9
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert (warning["skipped"], warning["usable"], warning["first_problem"]) == (3, 9, "userProgress[2].email")


async def test_all_member_rows_unusable_is_still_dead_lettered(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """Rows present but none usable: ``DeadLetter("platform_bad_response")`` naming the first
    problem's path (``userProgress[0].email``), no warning; the same consequence as before the fix."""
    document = make_team_assignment(3, assignment_id="asg-all-bad")
    document["userProgress"] = [_drop_email(row) for row in document["userProgress"]]
    standin.add_assignment(document)
    with capture_logs() as logs, pytest.raises(DeadLetter) as info:
        await api(session, standin.url).members("asg-all-bad")
    assert info.value.reason == "platform_bad_response"
    assert info.value.detail == "userProgress[0].email"
    assert [e for e in logs if e["log_level"] == "warning"] == []


async def test_an_assignment_without_members_expands_to_nobody(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """``userProgress: []`` gives no people and no warning, while a missing ``userProgress`` is
    ``DeadLetter("platform_bad_response")``: both as before the fix, which changed neither."""
    standin.add_assignment(make_team_assignment(0, assignment_id="asg-empty"))
    without = make_team_assignment(0, assignment_id="asg-no-rows")
    del without["userProgress"]
    standin.add_assignment(without)
    client = api(session, standin.url)
    with capture_logs() as logs:
        assert await client.members("asg-empty") == []
    assert logs == []
    with pytest.raises(DeadLetter) as info:
        await client.members("asg-no-rows")
    assert (info.value.reason, info.value.detail) == ("platform_bad_response", "userProgress")
