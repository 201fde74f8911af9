"""Redirects from StackOne are never followed (issue 13 item 7): a 3xx is an unexpected answer, never success.

A real aiohttp server stands in for a StackOne (or a proxy in front of it) that answers
with a redirect; it records every request, so a followed redirect shows as a second one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from lmsbridge.errors import DeadLetter, WriteUncertain
from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone import RateLimiter, StackOneClient
from tests.stackone.conftest import ACCOUNT, KEY, USER_AGENT

Answer = Callable[[web.Request], web.StreamResponse]


@dataclass
class Scripted:
    """A real HTTP server answering each (method, path) with a scripted response; records requests."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        answer = self.answers.get((request.method, request.path))
        if answer is None:
            return web.json_response({"data": {"id": "followed-and-counted"}}, status=200)
        return answer(request)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Scripted]:
    """A scripted server on 127.0.0.1 (any path it has no script for answers 200 with an id)."""
    server = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    """A scripted server for one test."""
    async with serving() as server:
        yield server


def client_for(
    server: Scripted, session: aiohttp.ClientSession, *, limiter: RateLimiter | None = None, **settings: object
) -> StackOneClient:
    """A StackOne client for the scripted server (``settings`` override StackOneSettings)."""
    values: dict[str, object] = {"base_url": server.url, "api_key": KEY, "timeout": 5.0, **settings}
    return StackOneClient(session, StackOneSettings.model_validate(values), user_agent=USER_AGENT, limiter=limiter)


def redirect(status: int, location: str) -> Answer:
    """Answer ``status`` with a ``Location`` header and a small JSON body."""
    return lambda _: web.json_response({"message": "moved"}, status=status, headers={"Location": location})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirected_create_is_not_followed_nor_counted_as_written(
    scripted: Scripted, session: aiohttp.ClientSession, status: int
) -> None:
    """POST .../assignments answered with a redirect: no second request is made (before the fix a 302
    was followed as a GET whose 200 counted as the create), and the create raises WriteUncertain, so
    the record is listed before it is written again and never marked written on a redirect."""
    path = "/unified/lms/users/usr-1/assignments"
    scripted.answers[("POST", path)] = redirect(status, "/landing")
    client = client_for(scripted, session)

    with pytest.raises(WriteUncertain) as raised:
        await client.create_assignment(ACCOUNT, "usr-1", {"learning_object_external_reference": "x"})

    assert scripted.seen == [("POST", path)]
    assert f"HTTP {status}" in str(raised.value)
    assert "redirect" in str(raised.value)


async def test_a_redirected_read_is_a_dead_letter_naming_the_status(
    scripted: Scripted, session: aiohttp.ClientSession
) -> None:
    """GET /unified/lms/users answered 302 to another host: not followed (the API key would go with it),
    and it raises a dead letter with reason ``stackone_302``."""
    scripted.answers[("GET", "/unified/lms/users")] = redirect(302, "http://127.0.0.2:9/elsewhere")
    client = client_for(scripted, session)

    with pytest.raises(DeadLetter) as raised:
        await client.find_users_by_email(ACCOUNT, "jane@acme.example")

    assert raised.value.reason == "stackone_302"
    assert scripted.seen == [("GET", "/unified/lms/users")]
