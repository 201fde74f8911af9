"""The security-training platform's API, for expanding an assignment into its people.

``GET /api/public/v1/assignments/{id}`` (Bearer ``scs_live_...``) returns the assignment with
a ``userProgress`` row per member; team and org assignments list every member (spec 003
materialises the rows at creation, and the endpoint is not paginated). The rows are read one
by one (:mod:`.limeplate_members`): an unusable row is skipped with a warning and counted
(``on_skipped``), and only an assignment whose rows are all unusable fails. Failures map to
the consumer's outcomes here:

======================  ==============================================================
answer                  raises
======================  ==============================================================
429                     ``RetryAfter`` (``Retry-After`` seconds or HTTP date, else 30 s)
408, 5xx, timeout,      ``RetryLater``
connection error
401, 403                ``RetryLater``: the key was refused (it may be mid-rotation)
404                     ``DeadLetter("assignment_not_found")``
anything else, or a     ``DeadLetter("platform_bad_response")``
body that does not
parse, is over 64 MiB
or whose member rows
are all unusable
======================  ==============================================================

The key never appears in a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import SecretStr

from lmsbridge.bodies import PLATFORM_ANSWER_LIMIT, MiB, read_at_most
from lmsbridge.domain import PersonProgress
from lmsbridge.errors import DeadLetter, RejectRequest, RetryAfter, RetryLater
from lmsbridge.retry_after import retry_after_seconds
from lmsbridge.vendors.envelope import validate
from lmsbridge.vendors.limeplate import Camel
from lmsbridge.vendors.limeplate_members import usable_members

PATH = "/api/public/v1/assignments/{id}"
DEFAULT_RETRY_AFTER = 30.0


class AssignmentDetail(Camel):
    """The part of ``GET /assignments/{id}`` that expansion needs (``userProgress`` is required).

    The rows stay raw here so that :func:`usable_members` can validate them one by one.
    """

    id: str
    user_progress: list[Any]


def retry_after(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header (:mod:`lmsbridge.retry_after`; else 30 s)."""
    return retry_after_seconds(value, default=DEFAULT_RETRY_AFTER, now=now)


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
        on_skipped: Callable[[int], None] | None = None,
    ) -> None:
        self._session = session
        self._on_skipped = on_skipped  # called with the number of unusable member rows skipped
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._user_agent = user_agent

    async def members(self, assignment_id: str) -> list[PersonProgress]:
        """One :class:`PersonProgress` per usable ``userProgress`` row of the assignment."""
        url = self._base + PATH.format(id=quote(assignment_id, safe=""))
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        try:
            async with self._session.get(url, headers=headers, timeout=self._timeout) as response:
                status = response.status
                wait = response.headers.get("Retry-After")
                payload = await read_at_most(response, PLATFORM_ANSWER_LIMIT)
        except TimeoutError:
            raise RetryLater("platform API: timed out reading the assignment") from None
        except aiohttp.ClientError as exc:
            raise RetryLater(f"platform API: {type(exc).__name__} reading the assignment") from None
        if status != 200:
            raise _failure(status, wait, assignment_id)
        if payload is None:
            limit = PLATFORM_ANSWER_LIMIT // MiB
            raise DeadLetter("platform_bad_response", f"platform API: an answer larger than {limit} MiB; not read")
        try:
            detail = validate(AssignmentDetail, orjson.loads(payload))
            members = usable_members(detail.user_progress, assignment_id=assignment_id, on_skipped=self._on_skipped)
        except orjson.JSONDecodeError:
            raise DeadLetter("platform_bad_response", "platform API: the assignment is not JSON") from None
        except RejectRequest as exc:
            raise DeadLetter(
                "platform_bad_response", f"platform API: unusable assignment: {exc.message}", detail=exc.path
            ) from None
        return [row.person() for row in members]


def _failure(status: int, wait: str | None, assignment_id: str) -> Exception:
    if status == 429:
        return RetryAfter("platform API: rate limited (429)", delay=retry_after(wait))
    if status == 408 or status >= 500:
        return RetryLater(f"platform API: answered {status}")
    if status in (401, 403):
        return RetryLater(f"platform API: the platform API key was refused ({status}); check the source's api_key")
    if status == 404:
        return DeadLetter("assignment_not_found", f"platform API: assignment {assignment_id!r} not found")
    return DeadLetter("platform_bad_response", f"platform API: unexpected status {status}")
