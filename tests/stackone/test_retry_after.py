"""``Retry-After`` (issue 13 item 4): one parser for the project, non-finite values refused, the pause capped.

Before the fix, ``Retry-After: inf`` (or ``1e400``) from StackOne paused the API key's rate
limiter for ever, and ``86400`` for a day: no account got another request.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from lmsbridge.errors import RateLimited, RetryAfter, RetryLater
from lmsbridge.retry_after import bounded, parse_retry_after, retry_after_seconds
from lmsbridge.stackone import RateLimiter, ReadRetry
from lmsbridge.vendors.limeplate_api import retry_after as platform_retry_after
from tests.stackone.conftest import ACCOUNT
from tests.stackone.test_redirects import Scripted, client_for, serving

pytestmark = pytest.mark.usefixtures("steady_gc")  # times sub-second behaviour in this process

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    """A scripted StackOne for one test (see tests/stackone/test_redirects.py)."""
    async with serving() as server:
        yield server


def test_delta_seconds_and_http_dates_are_read() -> None:
    """``120`` is 120 s; an IMF-fixdate 45 s ahead is 45 s; a past date is 0; whitespace is allowed."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0
    ahead = format_datetime(datetime(2026, 6, 1, 12, 0, 45, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(ahead, now=NOW) == 45.0
    past = format_datetime(datetime(2026, 6, 1, 11, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "1e400", "1e3", "-5", "1.5", "", "soon", "٣", None])
def test_anything_but_digits_or_a_date_is_unreadable(value: str | None) -> None:
    """Not ``1*DIGIT`` nor an HTTP date: unreadable (None), so the caller's default applies."""
    assert parse_retry_after(value) is None
    assert retry_after_seconds(value, default=60.0) == 60.0


def test_results_are_always_finite() -> None:
    """A 5,000-digit delta or a date past year 9999 never gives inf, NaN or an exception."""
    huge = parse_retry_after("9" * 5000)
    assert huge is not None
    assert math.isfinite(huge)
    far = parse_retry_after("Fri, 31 Dec 99999 23:59:59 GMT", now=NOW)
    assert far is None or math.isfinite(far)
    assert bounded(math.inf, 300.0) == 300.0
    assert bounded(math.nan, 300.0) == 300.0
    assert bounded(-1.0, 300.0) == 0.0


def test_the_platform_client_uses_the_same_parser() -> None:
    """The training platform's client reads Retry-After with the same rules (its default: 30 s)."""
    assert platform_retry_after("12") == 12.0
    assert platform_retry_after("1e400") == platform_retry_after("inf") == platform_retry_after("1.5") == 30.0


def test_the_rate_limiter_caps_any_pause() -> None:
    """RateLimiter.pause(inf) or pause(86400) stops the key for at most ``max_pause`` (logged); NaN is ignored."""
    now = [1000.0]
    limiter = RateLimiter(600, clock=lambda: now[0], max_pause=300.0)
    with capture_logs() as logs:
        limiter.pause(math.inf)
    assert limiter.snapshot()["paused_for"] == 300.0
    assert [entry["event"] for entry in logs] == ["stackone.pause_capped"]
    limiter.pause(math.nan)
    limiter.pause(86400.0)
    assert limiter.snapshot()["paused_for"] == 300.0
    now[0] += 301.0
    assert limiter.snapshot()["paused_for"] == 0.0


def too_many(value: str) -> web.StreamResponse:
    """429 with ``Retry-After: value``."""
    return web.json_response({"message": "Too many requests"}, status=429, headers={"Retry-After": value})


@pytest.mark.parametrize("value", ["inf", "1e400", "86400"])
async def test_a_hostile_retry_after_pauses_the_key_no_longer_than_the_cap(
    scripted: Scripted, session: aiohttp.ClientSession, value: str
) -> None:
    """A 429 with ``Retry-After: inf``, ``1e400`` or ``86400``: the retry delay and the key's pause are
    finite and at most ``stackone.max_pause_seconds`` (default 300); the cap is logged when it applies."""
    path = "/unified/lms/users"
    scripted.answers[("GET", path)] = lambda _: too_many(value)
    limiter = RateLimiter(6000)
    client = client_for(scripted, session, limiter=limiter)

    with capture_logs() as logs, pytest.raises(RetryAfter) as raised:
        await client.find_users_by_email(ACCOUNT, "jane@acme.example")

    delay = raised.value.delay
    assert math.isfinite(delay), delay
    assert delay <= 300.0, delay
    paused = limiter.snapshot()["paused_for"]
    assert 0 <= paused <= 300.0, paused
    if value == "86400":
        assert delay == 300.0
        assert any(entry["event"] == "stackone.retry_after_capped" for entry in logs), logs


async def test_traffic_resumes_after_the_capped_pause(scripted: Scripted, session: aiohttp.ClientSession) -> None:
    """With ``max_pause_seconds = 0.5``, a 429 saying ``Retry-After: 86400`` stops the key for 0.5 s:
    the next request goes out after about half a second, not a day."""
    path = "/unified/lms/users"
    answers = iter([too_many("86400")])
    scripted.answers[("GET", path)] = lambda _: next(answers, web.json_response({"data": []}))
    limiter = RateLimiter(6000, max_pause=0.5)
    client = client_for(scripted, session, limiter=limiter, max_pause_seconds=0.5)

    with pytest.raises(RetryAfter):
        await client.find_users_by_email(ACCOUNT, "jane@acme.example")
    started = time.monotonic()
    assert await asyncio.wait_for(client.find_users_by_email(ACCOUNT, "jane@acme.example"), timeout=5.0) == []
    assert 0.3 <= time.monotonic() - started < 2.0


def test_a_listing_page_waits_once_for_a_429_its_retry_after_for_a_408_and_a_capped_backoff_otherwise() -> None:
    """Before asking a page again: nothing after a 429 when a rate limiter sends it (the limiter is
    paused for the Retry-After: waiting here too would wait twice), the Retry-After without one; a
    408's Retry-After; a doubling, jittered backoff for anything else; never more than ``max_wait``."""
    retry = ReadRetry(attempts=6, backoff=1.0, max_wait=10.0, jitter=random.Random(1))
    assert retry.wait(1, RateLimited("429", delay=30.0), limited=True) == 0.0
    assert retry.wait(1, RateLimited("429", delay=3.0), limited=False) == 3.0
    assert retry.wait(1, RetryAfter("408", delay=30.0), limited=True) == 10.0
    waits = [retry.wait(n, RetryLater("503"), limited=True) for n in range(1, 8)]
    assert [0.5 <= w / 2 ** (n - 1) < 1.5 for n, w in enumerate(waits[:4], start=1)] == [True] * 4
    assert waits[5:] == [10.0, 10.0]  # 32 s and 64 s (at least half of each), capped
