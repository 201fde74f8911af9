"""Every client of a server lmsbridge does not run reads at most a bounded answer, then stops reading.

A proxy streaming an error page for ever, an endpoint answering with a file, or a gzip bomb
(a few kilobytes on the wire, gigabytes unpacked) would otherwise fill the worker's memory until
the kernel kills it. Each client turns an answer over its bound into its usual error for an
unreadable answer, having read little more than the bound.
"""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from lmsbridge.bodies import PLATFORM_ANSWER_LIMIT, STACKONE_ANSWER_LIMIT, MiB
from lmsbridge.errors import DeadLetter, MalformedPage, RetryLater, WriteUncertain
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.settings import ReconcileSettings, StackOneSettings
from lmsbridge.stackone import StackOneClient
from lmsbridge.vendors import LimeplateApi
from tests.floods import flood

STACKONE = f"{STACKONE_ANSWER_LIMIT // MiB} MiB"
PLATFORM = f"{PLATFORM_ANSWER_LIMIT // MiB} MiB"


def stackone(session: aiohttp.ClientSession, url: str) -> StackOneClient:
    """A StackOne client for ``url``."""
    settings = StackOneSettings(base_url=url, api_key="sk_test_flood", timeout=30.0)
    return StackOneClient(session, settings, user_agent="t")


@pytest.mark.parametrize("sized", [False, True], ids=["chunked", "sized"])
async def test_a_stackone_listing_over_the_bound_is_retried_not_read_whole(sized: bool) -> None:
    """A page four times the bound (chunked, or with its Content-Length) ends the listing with
    RetryLater naming the bound, after at most twice the bound went over the wire."""
    async with flood(4 * STACKONE_ANSWER_LIMIT, sized=sized) as server, aiohttp.ClientSession() as session:
        with pytest.raises(RetryLater, match=f"answer larger than {STACKONE}"):
            await stackone(session, server.url).list_user_assignments("acc-1", "user-1")
    assert server.sent < 2 * STACKONE_ANSWER_LIMIT


async def test_a_stackone_create_answered_by_a_gzip_bomb_may_have_written() -> None:
    """A 201 whose gzip body unpacks past the bound is a create that may have happened
    (WriteUncertain: check by listing before writing again), not a crash or a blind retry."""
    bomb = flood(4 * STACKONE_ANSWER_LIMIT, status=201, sized=True, gzip=True)
    async with bomb as server, aiohttp.ClientSession() as session:
        with pytest.raises(WriteUncertain, match=f"answer larger than {STACKONE}"):
            await stackone(session, server.url).create_assignment("acc-1", "user-1", {"x": 1})


async def test_a_stackone_error_status_with_a_huge_body_keeps_its_meaning() -> None:
    """A 503 with a body over the bound is still a 503: retried, named by its status."""
    async with flood(4 * STACKONE_ANSWER_LIMIT, status=503) as server, aiohttp.ClientSession() as session:
        with pytest.raises(RetryLater, match="HTTP 503"):
            await stackone(session, server.url).list_user_completions("acc-1", "user-1")


async def test_a_platform_page_over_the_bound_stops_the_pass_as_malformed() -> None:
    """The reconcile reader stops at a platform answer twice the bound: MalformedPage naming it."""
    settings = ReconcileSettings(max_attempts=1)
    async with flood(2 * PLATFORM_ANSWER_LIMIT) as server, aiohttp.ClientSession() as session:
        reader = PlatformClient(session, server.url, SecretStr("scs_live_flood"), settings, user_agent="t")
        with pytest.raises(MalformedPage, match=f"answer larger than {PLATFORM}"):
            await reader.get_json("/api/public/v1/assignments", what="the assignment list")
    assert server.sent < PLATFORM_ANSWER_LIMIT + 32 * MiB


async def test_an_assignments_members_over_the_bound_are_dead_lettered_as_a_bad_response() -> None:
    """The worker's platform reader dead-letters an assignment whose answer is over the bound."""
    async with flood(2 * PLATFORM_ANSWER_LIMIT, sized=True) as server, aiohttp.ClientSession() as session:
        api = LimeplateApi(session, server.url, SecretStr("scs_live_flood"), timeout=30.0)
        with pytest.raises(DeadLetter, match=f"answer larger than {PLATFORM}") as caught:
            await api.members("c0ffee00-1111-4222-8333-944445555666")
    assert caught.value.reason == "platform_bad_response"
    assert server.sent < PLATFORM_ANSWER_LIMIT + 32 * MiB
