"""Reading a platform's API for reconciliation: GET JSON, retried the way the platforms ask.

A 429, a 408 or a 5xx (and a timeout or a lost connection) is tried again, after
``Retry-After`` when the platform sent one (capped at ``reconcile.max_wait_seconds``), else
after a doubling backoff; after ``reconcile.max_attempts`` tries the pass stops with
:class:`~lmsbridge.errors.PlatformUnavailable`. Anything else that is not a 200 stops it at
once (a refused key, a 400, a 404): retrying cannot help. Every request sent is counted in
:attr:`PlatformClient.calls`. The key never appears in a message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from lmsbridge.bodies import PLATFORM_ANSWER_LIMIT, MiB, read_at_most
from lmsbridge.errors import MalformedPage, PlatformUnavailable
from lmsbridge.retry_after import bounded, parse_retry_after
from lmsbridge.scrub import scrub
from lmsbridge.settings import ReconcileSettings

Sleep = Callable[[float], Awaitable[None]]


class PlatformClient:
    """GETs from one platform's API with Bearer auth, retries and a call count."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: SecretStr,
        settings: ReconcileSettings,
        *,
        user_agent: str,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._settings = settings
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._user_agent = user_agent
        self._sleep = sleep
        self._jitter = random.Random()
        self.calls = 0
        self.retries = 0

    async def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, what: str, missing_ok: bool = False
    ) -> Any:
        """The parsed JSON of a 200 answer to ``GET path``; raises to stop the pass otherwise.

        ``missing_ok``: a 404 returns None (the thing was deleted since it was listed).
        """
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        last = ""
        for attempt in range(self._settings.max_attempts):
            if attempt:
                self.retries += 1
            self.calls += 1
            try:
                async with self._session.get(
                    self._base + path, params=params, headers=headers, timeout=self._timeout
                ) as response:
                    status = response.status
                    wait = response.headers.get("Retry-After")
                    read = await read_at_most(response, PLATFORM_ANSWER_LIMIT)
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = type(exc).__name__
                await self._pause(attempt, None)
                continue
            body = read if read is not None else b""
            if status == 200:
                if read is None:
                    limit = PLATFORM_ANSWER_LIMIT // MiB
                    raise MalformedPage(f"{what}: an answer larger than {limit} MiB; not read", field="(body)")
                try:
                    return orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise MalformedPage(f"{what}: the answer is not JSON", field="(body)") from None
            if status in (408, 429) or status >= 500:
                last = f"HTTP {status}"
                await self._pause(attempt, wait)
                continue
            if status == 404 and missing_ok:
                return None
            if status in (401, 403):
                raise PlatformUnavailable(
                    f"{what}: the platform refused the API key ({status}); check the source's api_key"
                )
            raise PlatformUnavailable(f"{what}: the platform answered {status}{_message(body, self._key)}")
        raise PlatformUnavailable(f"{what}: still failing after {self._settings.max_attempts} tries (last: {last})")

    async def _pause(self, attempt: int, header: str | None) -> None:
        if attempt + 1 < self._settings.max_attempts:  # no wait after the last try
            await self._sleep(self._backoff(attempt, header))

    def _backoff(self, attempt: int, header: str | None) -> float:
        """Seconds before the next try: a readable ``Retry-After``, else a jittered doubling; capped."""
        cap = self._settings.max_wait_seconds
        asked = parse_retry_after(header)
        if asked is not None:
            return bounded(asked, cap)
        base = self._settings.backoff_seconds * (2.0**attempt)
        return min(cap, base * (0.5 + self._jitter.random()))


def _message(body: bytes, key: SecretStr) -> str:
    """``: <message>`` from the platforms' ``{"error": {"message"}}`` body, when there is one; the API
    key scrubbed out first (a platform may quote the key it refused)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return f": {scrub(str(message), (key.get_secret_value(),))[:200]}" if message else ""
