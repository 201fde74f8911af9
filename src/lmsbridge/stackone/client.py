"""The StackOne unified LMS client: the calls lmsbridge makes, and the one map from failures to errors.

Every request carries HTTP Basic auth (the API key as user name, empty password), the
linked account in ``x-account-id``, a real ``User-Agent`` and ``Accept: application/json``,
and first takes a slot from the key's budget (:mod:`lmsbridge.stackone.shared_budget`, shared by every process).

:func:`stackone_error` is the only place an HTTP status or a transport failure becomes an
:mod:`lmsbridge.errors` exception. Messages name the operation, the status and StackOne's
message, never the key or the ``Authorization`` header.

Redirects are never followed: a 3xx is an unexpected answer, never a success (followed, a
302 to a create came back as the 200 of a GET and counted as written). On a create it
raises :class:`~lmsbridge.errors.WriteUncertain` (list before writing again; the attempts
run out into a dead letter), elsewhere a dead letter ``stackone_3xx``. ``Retry-After`` is
read by :mod:`lmsbridge.retry_after` and bounded by ``stackone.max_pause_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ValidationError

from lmsbridge.bodies import STACKONE_ANSWER_LIMIT, MiB, read_at_most
from lmsbridge.domain.sync import iso
from lmsbridge.errors import (
    AlreadyExists,
    DeadLetter,
    LmsbridgeError,
    ParkRecord,
    PauseAccount,
    RateLimited,
    RetryAfter,
    RetryLater,
    RetryListingFirst,
    WriteUncertain,
)
from lmsbridge.logs import get_logger
from lmsbridge.ports import BeforeSend
from lmsbridge.retry_after import bounded
from lmsbridge.retry_after import retry_after_seconds as read_retry_after
from lmsbridge.scrub import scrub
from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone.models import BatchResult, CreateResult, LmsUser, RowsPage, UsersPage
from lmsbridge.stackone.ratelimit import Budget

Observer = Callable[[str, int, float], None]
"""Called after every request with (operation, status or 0 on a transport failure, seconds)."""
WaitObserver = Callable[[float], None]
"""Told how many seconds a request waited for the rate budget (in the waiting task's context)."""

log = get_logger(__name__)

DEFAULT_RETRY_AFTER = 60.0  # StackOne's documented default
DEFAULT_MAX_PAUSE = 300.0  # stackone.max_pause_seconds: the longest a Retry-After may stop the key
TIMEOUT_RECHECK_DELAY = 5.0  # after a create timed out, wait at least this long before listing to check
STACKONE_GIVES_UP = 60.0  # StackOne works on a request for up to 60 s before answering 408
EMPTY_PAGES_IN_A_ROW = 50  # a listing naming a next page after this many empty ones would never end
_MESSAGE_LIMIT = 300

_Page = TypeVar("_Page", bound=BaseModel)


def retry_after_seconds(headers: Mapping[str, str], default: float = DEFAULT_RETRY_AFTER) -> float:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); ``default`` when absent or unreadable."""
    return read_retry_after(headers.get("Retry-After"), default=default)


def _pause_for(operation: str, account: str, headers: Mapping[str, str], max_pause: float) -> float:
    """The wait StackOne asked for, no longer than ``max_pause`` (logged when the cap applies)."""
    asked = retry_after_seconds(headers)
    delay = bounded(asked, max_pause)
    if delay < asked:
        log.warning(
            "stackone.retry_after_capped",
            operation=operation,
            account=account,
            asked=asked,
            pause=delay,
            header=str(headers.get("Retry-After", ""))[:40],
        )
    return delay


def _error_fields(body: bytes, secrets: tuple[str, ...] = ()) -> tuple[str, Any]:
    """StackOne's ``message`` and ``provider_errors`` from an error body (JSON or not), ``secrets``
    scrubbed out before the message is cut to length (a key straddling the cut kept its first part)."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        text = body[: _MESSAGE_LIMIT * 4].decode("utf-8", "replace")
        return scrub(text, secrets)[:_MESSAGE_LIMIT].strip(), None
    if not isinstance(parsed, dict):
        return "", None
    message = parsed.get("message")
    text = scrub(str(message), secrets)[:_MESSAGE_LIMIT] if message is not None else ""
    return text, scrub(parsed.get("provider_errors"), secrets)


def stackone_error(
    operation: str,
    account: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    is_create: bool,
    user_scoped: bool,
    exc: BaseException | None = None,
    secrets: tuple[str, ...] = (),
    recheck_after: float = TIMEOUT_RECHECK_DELAY,
    max_pause: float = DEFAULT_MAX_PAUSE,
) -> LmsbridgeError:
    """Map a failed call to the exception naming its consequence.

    ``status`` 0 means no HTTP answer: ``exc`` is the transport failure. ``is_create`` is
    true for the creates StackOne cannot deduplicate (assignments, completions), where a
    lost answer may hide a write. ``user_scoped`` is true under ``/users/{id}/``, where a
    404 means the user, not the account, is unknown. ``secrets`` are scrubbed from messages.
    ``recheck_after`` is how long to wait before checking whether a create that got no
    answer was written (StackOne may go on working on it for up to 60 s). ``max_pause``
    bounds a ``Retry-After``.
    """
    if status == 0:
        what = "no response" if exc is None else type(exc).__name__
        if exc is not None and str(exc):  # aiohttp's texts name host and OS error, never headers
            what = f"{what}: {str(exc)[:_MESSAGE_LIMIT]}"
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            # Never connected, so nothing was sent: safe to retry as if nothing happened.
            return RetryLater(f"StackOne {operation}: could not connect ({what})")
        if is_create:
            return WriteUncertain(
                f"StackOne {operation}: no answer ({what}); the write may have happened",
                delay=recheck_after,
            )
        return RetryLater(f"StackOne {operation}: no answer ({what})")

    message, provider_errors = _error_fields(body, secrets)
    text = f"StackOne {operation}: HTTP {status}" + (f": {message}" if message else "")
    if status == 429:
        return RateLimited(text, delay=_pause_for(operation, account, headers, max_pause))
    if status == 408:
        if is_create:
            delay = _pause_for(operation, account, headers, max_pause)
            return WriteUncertain(text + " (the write may have happened)", delay=delay)
        return RetryAfter(text, delay=_pause_for(operation, account, headers, max_pause))
    if 300 <= status < 400:
        # Not followed (a followed 302 turned a create into a GET whose 200 counted as written).
        text += " (a redirect; not followed)"
        if is_create:  # a Post/Redirect/Get may mean it was written: list before writing again
            return WriteUncertain(text + "; the write may have happened", delay=recheck_after)
        return DeadLetter(f"stackone_{status}", text, detail={"message": message or None})
    if status >= 500 and status != 501:
        if is_create:  # a 502 or 504 may come after the LMS wrote it: list before creating again
            return RetryListingFirst(text + " (the write may have happened; listed before writing again)")
        return RetryLater(text)
    if status == 409:
        return AlreadyExists(text)
    if status in (401, 403, 412):
        return PauseAccount(account, status, text)
    if status == 404:
        if user_scoped:
            return ParkRecord("user_not_found", text)
        return PauseAccount(account, status, text)
    detail = {"message": message or None, "provider_errors": provider_errors}
    return DeadLetter(f"stackone_{status}", text, detail=detail)


@dataclass(frozen=True)
class ReadRetry:
    """How a listing's page is asked again after a transient failure (reconciliation's settings).

    ``attempts`` tries of one page at most. The wait before the next: after a 429 none of its own
    (the rate limiter, paused for the ``Retry-After``, holds the next request back: waiting here as
    well would wait twice), after another ``Retry-After`` (a 408) what it says, otherwise a
    doubling backoff from ``backoff`` with jitter; never more than ``max_wait``.
    """

    attempts: int = 6
    backoff: float = 1.0
    max_wait: float = 120.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: random.Random = field(default_factory=random.Random)

    def wait(self, attempt: int, exc: RetryLater, *, limited: bool) -> float:
        """Seconds to wait before try ``attempt + 1`` after ``exc`` (``limited``: through a rate limiter)."""
        if isinstance(exc, RateLimited) and limited:
            return 0.0
        if isinstance(exc, RetryAfter):
            return bounded(exc.delay, self.max_wait)
        return min(self.max_wait, self.backoff * 2.0 ** (attempt - 1) * (0.5 + self.jitter.random()))


class StackOneClient:
    """The StackOne LMS calls lmsbridge makes, for any linked account of one API key."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: StackOneSettings,
        *,
        user_agent: str,
        limiter: Budget | None = None,
        on_response: Observer | None = None,
        on_budget_wait: WaitObserver | None = None,
    ) -> None:
        self._session = session
        self._base = settings.base_url.rstrip("/")
        self._page_size = settings.page_size
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._recheck_after = max(TIMEOUT_RECHECK_DELAY, STACKONE_GIVES_UP - settings.timeout)
        self._max_pause = settings.max_pause_seconds
        self._limiter = limiter
        self._on_response = on_response
        self._on_budget_wait = on_budget_wait
        key = settings.api_key.get_secret_value()
        token = base64.b64encode(f"{key}:".encode()).decode("ascii")
        self._secrets = (key, token)
        self._headers = {
            "Authorization": f"Basic {token}",
            "User-Agent": user_agent,
            "Accept": "application/json",
        }

    # --- writes -------------------------------------------------------------------------

    async def upsert_content_batch(self, account: str, items: list[dict[str, Any]]) -> list[list[str]]:
        """Upsert learning objects in one call (202).

        Returns StackOne's per-item error lists, by position (an empty list: accepted); ``[]``
        when StackOne sent none, so an item past the end of the result counts as accepted.
        """
        data = await self._call(
            "upsert_content_batch", account, "POST", "/unified/lms/content/batch", json={"items": items}
        )
        return list(self._parse("upsert_content_batch", BatchResult, data).errors or [])

    async def create_assignment(
        self, account: str, user_id: str, body: dict[str, Any], *, before_send: BeforeSend | None = None
    ) -> str | None:
        """Create an assignment for a user; StackOne's id of it, if given."""
        return await self._create("create_assignment", account, user_id, "assignments", body, before_send)

    async def create_completion(
        self, account: str, user_id: str, body: dict[str, Any], *, before_send: BeforeSend | None = None
    ) -> str | None:
        """Create a completion for a user; StackOne's id of it, if given."""
        return await self._create("create_completion", account, user_id, "completions", body, before_send)

    async def delete_completion(self, account: str, user_id: str, completion_id: str) -> None:
        """Delete one completion of a user (one a retake superseded); a 404 means it is gone already."""
        path = _user_path(user_id, "completions") + "/" + quote(completion_id, safe="")
        try:
            await self._call("delete_completion", account, "DELETE", path, user_scoped=True)
        except ParkRecord as exc:
            if exc.reason != "user_not_found":
                raise

    # --- reads --------------------------------------------------------------------------

    async def list_user_assignments(self, account: str, user_id: str) -> list[dict[str, Any]]:
        """Every assignment of a user, all pages, rows as received."""
        return await self._all_rows("list_user_assignments", account, _user_path(user_id, "assignments"))

    async def list_user_completions(self, account: str, user_id: str) -> list[dict[str, Any]]:
        """Every completion of a user, all pages, rows as received."""
        return await self._all_rows("list_user_completions", account, _user_path(user_id, "completions"))

    async def iter_account_rows(
        self,
        account: str,
        kind: str,
        *,
        updated_after: datetime | None = None,
        retry: ReadRetry | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of every user's ``assignments`` or ``completions`` on the account (the cross-user
        lists), rows as received; only those updated after ``updated_after`` when given.

        ``retry``: a page whose request fails transiently is asked again, with the same cursor,
        as it says (a long listing no longer depends on every one of its calls succeeding).
        """
        params = {"page_size": str(self._page_size)}
        if updated_after is not None:
            params["filter[updated_after]"] = iso(updated_after)
        operation = f"list_{kind}"
        async for data in self._pages(operation, account, f"/unified/lms/{kind}", params, retry=retry):
            yield self._parse(operation, RowsPage, data).data

    async def find_users_by_email(self, account: str, email: str) -> list[LmsUser]:
        """ONE page of users filtered by e-mail, as received: the LMS may ignore the filter."""
        params = {"filter[email]": email, "page_size": str(self._page_size)}
        data = await self._call("find_users_by_email", account, "GET", "/unified/lms/users", params=params)
        return self._parse("find_users_by_email", UsersPage, data).data

    async def iter_users(self, account: str, *, updated_after: datetime | None = None) -> AsyncIterator[list[LmsUser]]:
        """Pages of the account's users (only those updated after ``updated_after`` when given)."""
        params = {"page_size": str(self._page_size)}
        if updated_after is not None:
            params["filter[updated_after]"] = iso(updated_after)
        async for data in self._pages("list_users", account, "/unified/lms/users", params):
            yield self._parse("list_users", UsersPage, data).data

    async def probe(self, account: str) -> None:
        """The cheapest call there is, to learn whether a paused account works again; raises like any call."""
        await self._call("probe", account, "GET", "/unified/lms/users", params={"page_size": "1"})

    # --- plumbing -----------------------------------------------------------------------

    async def _create(
        self,
        operation: str,
        account: str,
        user_id: str,
        kind: str,
        body: dict[str, Any],
        before_send: BeforeSend | None,
    ) -> str | None:
        data = await self._call(
            operation,
            account,
            "POST",
            _user_path(user_id, kind),
            json=body,
            is_create=True,
            user_scoped=True,
            before_send=before_send,
        )
        # A 2xx we cannot read (not JSON, no ``data`` object) proves nothing either way: StackOne
        # may have written it. The caller checks by listing, as after a 408, before writing again.
        # A readable ``CreateResult`` is a success even when its ``data.id`` is null (the spec
        # allows it: the LMS behind gave no id), like a 409: written, its id unknown.
        try:
            created = CreateResult.model_validate(data if isinstance(data, dict) else {})
        except ValidationError:
            created = CreateResult()
        if created.data is None:
            raise WriteUncertain(
                f"StackOne {operation}: a 2xx answer without a readable result; the write may have happened",
                delay=0.0,
            )
        return created.data.id or None

    async def _all_rows(self, operation: str, account: str, path: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        params = {"page_size": str(self._page_size)}
        async for data in self._pages(operation, account, path, params, user_scoped=True):
            rows.extend(self._parse(operation, RowsPage, data).data)
        return rows

    async def _pages(
        self,
        operation: str,
        account: str,
        path: str,
        params: dict[str, str],
        *,
        user_scoped: bool = False,
        retry: ReadRetry | None = None,
    ) -> AsyncIterator[Any]:
        """Each page's JSON, following the cursor ``next`` until it is null or empty.

        A short or even empty page may still name a next one, but a cursor seen before,
        :data:`EMPTY_PAGES_IN_A_ROW` empty pages in a row, or a page whose every row came on an
        earlier page (a provider going round in circles) mean the listing would never end: it
        stops with :class:`RetryLater` rather than holding its job (and the rate budget) forever.
        """
        seen: set[str] = set()
        rows_seen: set[int] = set()  # the rows' ids, hashed: a fraction of the strings' memory over millions
        empty = 0
        while True:
            data = await self._page(operation, account, path, params, user_scoped, retry)
            ids = _row_ids(data)
            if ids and ids <= rows_seen:
                raise RetryLater(
                    f"StackOne {operation}: every row of a page came on an earlier one; the listing would never end"
                )
            rows_seen |= ids
            yield data
            cursor = data.get("next") if isinstance(data, dict) else None
            if not cursor:
                return
            if cursor in seen:
                raise RetryLater(f"StackOne {operation}: the cursor repeated; the listing would never end")
            empty = empty + 1 if isinstance(data, dict) and not data.get("data") else 0
            if empty >= EMPTY_PAGES_IN_A_ROW:
                raise RetryLater(
                    f"StackOne {operation}: {empty} empty pages in a row, each naming a next one;"
                    " the listing would never end"
                )
            seen.add(cursor)
            params = {**params, "next": str(cursor)}

    async def _page(
        self,
        operation: str,
        account: str,
        path: str,
        params: dict[str, str],
        user_scoped: bool,
        retry: ReadRetry | None,
    ) -> Any:
        """One page; with ``retry``, asked again after a transient failure (5xx, 408, 429, no
        answer), up to ``retry.attempts`` tries, waiting as :meth:`ReadRetry.wait` says."""
        attempt = 0
        while True:
            try:
                return await self._call(operation, account, "GET", path, params=params, user_scoped=user_scoped)
            except RetryLater as exc:
                attempt += 1
                if retry is None or attempt >= retry.attempts:
                    raise
                wait = retry.wait(attempt, exc, limited=self._limiter is not None)
                log.info("stackone.page_retry", operation=operation, account=account, attempt=attempt, wait=wait)
                await retry.sleep(wait)

    def _parse(self, operation: str, model: type[_Page], data: Any) -> _Page:
        try:
            return model.model_validate(data if data is not None else {})
        except ValidationError:
            raise RetryLater(f"StackOne {operation}: unreadable response") from None

    async def _call(
        self,
        operation: str,
        account: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        is_create: bool = False,
        user_scoped: bool = False,
        before_send: BeforeSend | None = None,
    ) -> Any:
        """One request; the parsed JSON of a 2xx answer (None if empty or not JSON), else raises."""
        if self._limiter is not None:
            asked = time.perf_counter()
            await self._limiter.acquire(account)
            if self._on_budget_wait is not None:
                self._on_budget_wait(time.perf_counter() - asked)
        if before_send is not None:
            await before_send()
        headers = {**self._headers, "x-account-id": account}
        data: bytes | None = None
        if json is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(json)
        started = time.perf_counter()
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                read = await read_at_most(response, STACKONE_ANSWER_LIMIT)
                response_headers = response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:  # asyncio.TimeoutError is TimeoutError
            self._observe(operation, 0, started)
            raise stackone_error(
                operation,
                account,
                0,
                {},
                b"",
                is_create=is_create,
                user_scoped=user_scoped,
                exc=exc,
                recheck_after=self._recheck_after,
            ) from None
        self._observe(operation, status, started)
        body = read if read is not None else b""
        if read is None and 200 <= status < 300:
            text = f"StackOne {operation}: HTTP {status}, an answer larger than {STACKONE_ANSWER_LIMIT // MiB} MiB"
            if is_create:
                raise WriteUncertain(text + "; the write may have happened", delay=0.0)
            raise RetryLater(text + "; not read")
        if 200 <= status < 300:
            try:
                return orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                return None
        error = stackone_error(
            operation,
            account,
            status,
            response_headers,
            body,
            is_create=is_create,
            user_scoped=user_scoped,
            secrets=self._secrets,
            max_pause=self._max_pause,
        )
        # A 429 is the key's rate limit: the whole key pauses. A 408 is one account's provider too
        # slow for StackOne's 60 s (it always carries a Retry-After): only that call's record waits,
        # as its error's delay; pausing the key would stall every other customer's LMS on it.
        if self._limiter is not None and isinstance(error, RateLimited):
            self._limiter.pause(error.delay)
        raise error

    def _observe(self, operation: str, status: int, started: float) -> None:
        if self._on_response is not None:
            self._on_response(operation, status, time.perf_counter() - started)


def _row_ids(data: Any) -> set[int]:
    """The ids of a page's rows, hashed; empty when it has no rows, or a row without a string id."""
    rows = data.get("data") if isinstance(data, dict) else None
    ids = [row.get("id") if isinstance(row, dict) else None for row in rows] if isinstance(rows, list) else []
    return {hash(i) for i in ids if isinstance(i, str)} if ids and all(isinstance(i, str) for i in ids) else set()


def _user_path(user_id: str, kind: str) -> str:
    return f"/unified/lms/users/{quote(user_id, safe='')}/{kind}"
