"""The platform reader's retries: Retry-After honoured and capped, backoff, giving up, what stops it at once."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import SecretStr

from lmsbridge.errors import PlatformUnavailable
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.settings import ReconcileSettings
from lmsbridge.testing.limeplate import LimeplateStandIn

PATH = "/api/public/v1/assignments"


def client(session: aiohttp.ClientSession, url: str, key: str, waits: list[float], **settings: float) -> PlatformClient:
    """A reader whose waits are recorded instead of slept."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    values = {"max_attempts": 4, "backoff_seconds": 0.5, "max_wait_seconds": 10.0, **settings}
    return PlatformClient(session, url, SecretStr(key), ReconcileSettings(**values), user_agent="t", sleep=sleep)


async def test_retry_after_is_waited_capped_and_counted(platform: LimeplateStandIn) -> None:
    """Two 429s with Retry-After: 3 then a 200: two waits of 3 s, three calls; with a 2 s cap, 2 s each."""
    waits: list[float] = []
    async with aiohttp.ClientSession() as session:
        reader = client(session, platform.url, "scs_live_testkey", waits)
        platform.fail_next(429, times=2, retry_after=3)
        assert await reader.get_json(PATH, what="list") == []
        assert (waits, reader.calls, reader.retries) == ([3.0, 3.0], 3, 2)
        capped = client(session, platform.url, "scs_live_testkey", waits := [], max_wait_seconds=2.0)
        platform.fail_next(503, times=1, retry_after=3600)
        assert await capped.get_json(PATH, what="list") == []
        assert waits == [2.0]


async def test_without_retry_after_it_backs_off_then_stops_naming_the_last_failure(platform: LimeplateStandIn) -> None:
    """500s without Retry-After: doubling, jittered waits; after max_attempts tries the pass stops."""
    waits: list[float] = []
    async with aiohttp.ClientSession() as session:
        reader = client(session, platform.url, "scs_live_testkey", waits)
        platform.fail_next(500, times=10)
        with pytest.raises(PlatformUnavailable, match=r"list: still failing after 4 tries \(last: HTTP 500\)"):
            await reader.get_json(PATH, what="list")
        assert reader.calls == 4
        assert len(waits) == 3  # none after the last try
        assert all(0.5 * 2**i * 0.5 <= w <= 0.5 * 2**i * 1.5 for i, w in enumerate(waits))


async def test_a_refused_key_stops_at_once_without_the_key_in_the_message(platform: LimeplateStandIn) -> None:
    """401 is not retried, and the message names the setting to check, never the key."""
    waits: list[float] = []
    async with aiohttp.ClientSession() as session:
        reader = client(session, platform.url, "scs_live_wrong", waits)
        with pytest.raises(PlatformUnavailable, match="refused the API key") as caught:
            await reader.get_json(PATH, what="list")
        assert "scs_live_wrong" not in str(caught.value)
        assert (reader.calls, waits) == (1, [])


@pytest.mark.parametrize("key", ["scs_live_quotedkey123", "PlainKeyWithNoKnownPrefix42"])
async def test_a_platform_quoting_the_key_in_its_error_never_gets_it_into_the_message(key: str) -> None:
    """A platform that answers 400 "Invalid API key provided: <the key>" stops the pass with its message,
    the key masked (before: quoted whole into the error `reconcile` prints, its `--json` and the
    worker's `reconcile.pass` log line; a key without a known prefix escaped the logs' masking too)."""
    platform = LimeplateStandIn(api_key=key)
    await platform.start()
    try:
        async with aiohttp.ClientSession() as session:
            reader = client(session, platform.url, key, [])
            platform.fail_next(400, message=f"Invalid API key provided: {key}")
            with pytest.raises(PlatformUnavailable) as caught:
                await reader.get_json(PATH, what="the assignment list")
    finally:
        await platform.close()
    assert "Invalid API key provided: ***" in str(caught.value)
    assert key not in str(caught.value)
