"""``LimeplateApi``'s less common answers, each against a real server, and the stand-in's own promises.

Complements ``test_limeplate_api.py``: other statuses, bodies that do not parse, a server
that is too slow, ``Retry-After`` as an HTTP date, and what ``LimeplateStandIn`` records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from lmsbridge.errors import DeadLetter, RetryAfter, RetryLater
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.vendors import LimeplateApi
from lmsbridge.vendors.limeplate_api import retry_after

KEY = "scs_live_0f9e8d7c6b5a4f3e"
ASSIGNMENT = "c0ffee00-1111-4222-8333-944445555666"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def standin() -> AsyncIterator[LimeplateStandIn]:
    """The stand-in on a real port, serving a 3-member team assignment."""
    server = LimeplateStandIn(KEY)
    server.add_assignment(make_team_assignment(3, assignment_id=ASSIGNMENT))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session per test."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a one-route server answering ``GET /api/public/v1/assignments/{id}`` with ``handler``."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/api/public/v1/assignments/{id}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def api(session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0) -> LimeplateApi:
    """A client for ``url``."""
    return LimeplateApi(session, url, SecretStr(KEY), timeout=timeout)


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_transient_statuses_retry_later(
    standin: LimeplateStandIn, session: aiohttp.ClientSession, status: int
) -> None:
    """408 and 5xx are transient: ``RetryLater``, not a dead letter and not a rate limit."""
    standin.fail_next(status)
    with pytest.raises(RetryLater) as info:
        await api(session, standin.url).members(ASSIGNMENT)
    assert not isinstance(info.value, RetryAfter)


async def test_forbidden_key_retries_with_a_message_about_the_key(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """403 means the platform refused the key (perhaps mid-rotation): ``RetryLater`` saying so, without the key."""
    standin.fail_next(403)
    with pytest.raises(RetryLater) as info:
        await api(session, standin.url).members(ASSIGNMENT)
    assert "key was refused" in str(info.value)
    assert KEY not in str(info.value)


async def test_other_client_errors_are_dead_lettered(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """A 400 will not improve with retries: ``DeadLetter("platform_bad_response")``."""
    standin.fail_next(400)
    with pytest.raises(DeadLetter) as info:
        await api(session, standin.url).members(ASSIGNMENT)
    assert info.value.reason == "platform_bad_response"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"<html>maintenance</html>", None),
        (b"[]", None),
        (b'{"id": "x"}', "userProgress"),
        (b'{"id": "x", "userProgress": [{"name": "No Mail"}]}', "userProgress[0].email"),
        (b'{"id": "x", "userProgress": [{"email": "a@b.example", "progressPercent": "lots"}]}', None),
    ],
    ids=["html", "array", "no-userProgress", "member-without-email", "bad-progress"],
)
async def test_unparsable_documents_are_dead_lettered(
    serve: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession, body: bytes, path: str | None
) -> None:
    """A 200 whose body is not the assignment document is ``DeadLetter("platform_bad_response")``."""

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    url = await serve(handler)
    with pytest.raises(DeadLetter) as info:
        await api(session, url).members(ASSIGNMENT)
    assert info.value.reason == "platform_bad_response"
    if path is not None:
        assert info.value.detail == path


async def test_empty_team_expands_to_nobody(standin: LimeplateStandIn, session: aiohttp.ClientSession) -> None:
    """An assignment whose ``userProgress`` is empty expands to an empty list, not an error."""
    standin.add_assignment(make_team_assignment(0, assignment_id="empty"))
    assert await api(session, standin.url).members("empty") == []


async def test_slow_server_times_out_as_retry_later(
    serve: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    """A server slower than the client's timeout gives ``RetryLater``, within about the timeout."""

    async def handler(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.json_response({})

    url = await serve(handler)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RetryLater, match="timed out"):
        await api(session, url, timeout=0.2).members(ASSIGNMENT)
    assert loop.time() - started < 1.5


async def test_request_carries_bearer_key_accept_and_user_agent(
    serve: Callable[[Handler], Awaitable[str]], session: aiohttp.ClientSession
) -> None:
    """The client authenticates with ``Bearer <key>`` and names itself in ``User-Agent``."""
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.update(request.headers)
        return web.json_response(make_team_assignment(1, assignment_id=request.match_info["id"]))

    url = await serve(handler)
    client = LimeplateApi(session, url + "/", SecretStr(KEY), user_agent="lmsbridge/9.9")
    assert len(await client.members(ASSIGNMENT)) == 1
    assert (seen["Authorization"], seen["User-Agent"], seen["Accept"]) == (
        f"Bearer {KEY}",
        "lmsbridge/9.9",
        "application/json",
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """``Retry-After`` is delta-seconds or an HTTP date; anything unreadable means 30 seconds."""
    now = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()
    assert retry_after("12") == 12
    assert retry_after(format_datetime(datetime(2026, 6, 1, 12, 0, 45, tzinfo=UTC), usegmt=True), now=now) == 45
    assert retry_after(format_datetime(datetime(2026, 6, 1, 11, tzinfo=UTC), usegmt=True), now=now) == 0
    assert retry_after(None) == retry_after("") == retry_after("soon") == retry_after("-3") == 30


async def test_standin_checks_the_key_and_records_every_request(
    standin: LimeplateStandIn, session: aiohttp.ClientSession
) -> None:
    """The stand-in answers 401 to a wrong key, records each request, and consumes faults in order."""
    wrong = LimeplateApi(session, standin.url, SecretStr("scs_live_other"))
    with pytest.raises(RetryLater):
        await wrong.members(ASSIGNMENT)
    standin.fail_next(503, 1)
    standin.fail_next(429, 1, 3)
    client = api(session, standin.url)
    with pytest.raises(RetryLater):
        await client.members(ASSIGNMENT)
    with pytest.raises(RetryAfter) as info:
        await client.members(ASSIGNMENT)
    assert info.value.delay == 3
    assert len(await client.members(ASSIGNMENT)) == 3
    assert standin.requests == [("GET", f"/api/public/v1/assignments/{ASSIGNMENT}")] * 4


def test_make_team_assignment_is_a_spec_shaped_document() -> None:
    """The helper builds the 003 ``GET /assignments/{id}`` shape with one ``userProgress`` row per member."""
    document = make_team_assignment(12, assignment_id="a-1", target_id="xss", title="XSS", domain="corp.example")
    assert (document["id"], document["assigneeType"], document["targetId"], document["targetTitle"]) == (
        "a-1",
        "team",
        "xss",
        "XSS",
    )
    assert document["totalAssignees"] == len(document["userProgress"]) == 12
    assert {row["email"] for row in document["userProgress"]} == {f"member{i:03d}@corp.example" for i in range(12)}
    assert {"userId", "name", "progressPercent", "completedAt"} <= set(document["userProgress"][0])
