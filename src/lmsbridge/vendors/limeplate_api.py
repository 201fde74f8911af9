"""The security-training platform's API, for expanding an assignment into its people.

``GET /api/public/v1/assignments/{id}`` (Bearer ``scs_live_...``) returns the assignment with
a ``userProgress`` row per member; team and org assignments list every member. Failures map
to retry or dead-letter here; the key never appears in a message.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import orjson
from pydantic import Field, SecretStr

from lmsbridge.domain import PersonProgress
from lmsbridge.errors import DeadLetter, LmsbridgeError, RetryAfter, RetryLater
from lmsbridge.vendors.envelope import Lenient, validate
from lmsbridge.vendors.limeplate import Member


class AssignmentDetail(Lenient):
    """The part of ``GET /assignments/{id}`` that expansion needs."""

    id: str
    userProgress: list[Member] = Field(default_factory=list)


class LimeplateApi:
    """Reads assignments' members from the platform."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 10.0,
        user_agent: str = "lmsbridge",
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._user_agent = user_agent

    async def members(self, assignment_id: str) -> list[PersonProgress]:
        """One :class:`PersonProgress` per member of the assignment."""
        url = f"{self._base}/api/public/v1/assignments/{quote(assignment_id, safe='')}"
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                payload = await response.read()
        except TimeoutError:
            raise RetryLater("platform API: timed out reading the assignment") from None
        except aiohttp.ClientError as exc:
            raise RetryLater(f"platform API: {type(exc).__name__}") from None
        if status == 429:
            delay = float(retry_after) if retry_after and retry_after.isdigit() else 30.0
            raise RetryAfter("platform API: rate limited (429)", delay=delay)
        if status >= 500:
            raise RetryLater(f"platform API: server error {status}")
        if status in (401, 403):
            raise RetryLater(f"platform API: the API key was refused ({status}); check the source's api_key")
        if status == 404:
            raise DeadLetter("assignment_not_found", f"platform API: assignment {assignment_id} not found")
        if status != 200:
            raise DeadLetter("platform_bad_response", f"platform API: unexpected status {status}")
        try:
            detail = validate(AssignmentDetail, orjson.loads(payload))
        except (orjson.JSONDecodeError, LmsbridgeError) as exc:
            raise DeadLetter("platform_bad_response", f"platform API: unreadable assignment: {exc}") from None
        return [m.person(completed=(m.progressPercent or 0) >= 100) for m in detail.userProgress]
