"""A StackOne stand-in: a real aiohttp server answering the LMS endpoints lmsbridge calls.

It keeps every request it receives and what was written (assignments, completions,
content), checks each request against StackOne's OpenAPI spec (when given) and against
the rules the spec does not state (Basic auth, ``x-account-id``, ``User-Agent``), and can
misbehave on demand: scripted failures (:meth:`StackOneStandIn.fail_next`), seeded random
faults (:meth:`StackOneStandIn.set_fault_rates`), disabled accounts, a per-key rate limit,
a filter on e-mail the LMS ignores, 409 on a duplicate assignment, and rows listed without their
learning object reference.

Used by the tests, the demo and the benchmarks; answers are shaped as the spec's schemas.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import math
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from multidict import CIMultiDict

from lmsbridge.domain.sync import iso

if TYPE_CHECKING:  # the spec validator needs jsonschema, a test-only dependency: imported only when a spec is given
    from lmsbridge.testing.openapi import SpecValidator

DEFAULT_PAGE_SIZE = 25
_WINDOW = 60.0
CREATABLE_STATUSES = ("pending", "in_progress")
"""What an assignment may be created as: "It can be pending or in progress" (StackOne's Create User
Assignment page); the status enum's ``completed`` is for assignments as listed."""
_WRITES = frozenset({"create_assignment", "create_completion", "upsert_content", "upsert_content_batch"})
_ASSIGNMENT_FIELDS = (
    "learning_object_external_reference",
    "learning_object_id",
    "external_reference",
    "progress",
    "assigned_at",
    "due_date",
    "status",
)
_COMPLETION_FIELDS = (
    "learning_object_external_reference",
    "learning_object_id",
    "external_reference",
    "content_external_reference",
    "content_id",
    "result",
    "completed_at",
    "time_spent",
    "score",
)


@dataclass
class RecordedRequest:
    """One request as the stand-in received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive: headers["authorization"] == headers["Authorization"]
    json: Any
    account: str | None
    status: int = 0
    time: float = 0.0


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: int | None
    path_contains: str | None
    account: str | None
    write_before_failing: bool
    delay: float
    body: dict[str, Any] | None
    method: str | None = None
    raw: bytes | None = None
    query_has: str | None = None
    every: int = 1
    seen: int = 0  # matching requests so far (``every``)

    def matches(self, path: str, account: str, method: str = "", query: Mapping[str, str] | None = None) -> bool:
        return (
            (self.path_contains is None or self.path_contains in path)
            and (self.account is None or self.account == account)
            and (self.method is None or self.method == method)
            and (self.query_has is None or self.query_has in (query or {}))
        )


@dataclass
class _Rates:
    error_5xx: float = 0.0
    burst_429: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 0.5
    retry_after: int = 1
    write_5xx: float = 0.0  # of create and upsert calls only
    create_408: float = 0.0  # of creates: written, then answered 408 (StackOne timed out after the provider wrote)


@dataclass
class _Answer:
    status: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


_Handler = Callable[[str, dict[str, str], web.Request, Any], Awaitable[_Answer]]


class StackOneStandIn:
    """A real aiohttp server answering the LMS endpoints lmsbridge calls, keeping what it receives."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        spec_path: str | Path | None = None,
        honour_email_filter: bool = True,
        rate_limit_per_minute: int | None = None,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.honour_email_filter = honour_email_filter
        self.rate_limit_per_minute = rate_limit_per_minute
        # An LMS that keeps one completion per person and learning object: a second create is 409.
        self.one_completion_per_object = False
        # An LMS that keeps a completion's day and whole percents only, and lists them so.
        self.completions_keep_day_and_whole_percent = False
        # An LMS that maps learning objects by its own id only: rows it writes from now on are listed
        # with ``learning_object_external_reference`` null (the spec lets it be) and ``learning_object_id``.
        self.lists_without_reference = False
        self._auth = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode("ascii")
        self._validator = _validator(str(Path(spec_path).resolve())) if spec_path is not None else None
        self._ids = random.Random(seed)
        self._chaos = random.Random(seed + 1)
        # state
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.conflicts = 0
        self.rate_limited = 0
        self._writes = 0
        self._users: dict[str, dict[str, dict[str, Any]]] = {}
        self._by_email: dict[str, dict[str, list[str]]] = {}
        self._assignments: list[dict[str, Any]] = []
        self._completions: list[dict[str, Any]] = []
        self.deleted_completions: list[dict[str, Any]] = []  # removed by DELETE, oldest first
        self._assigned: set[tuple[str, str, str]] = set()
        self._content: dict[str, dict[str, dict[str, Any]]] = {}
        # misbehaviour
        self._faults: list[_Fault] = []
        self._rates = _Rates()
        self._disabled: dict[str, int] = {}
        self._window: deque[float] = deque()
        self._admitted: list[float] = []  # every request the rate limit let through (monotonic)
        # server
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._routes: list[tuple[str, re.Pattern[str], str, _Handler]] = [
            ("GET", re.compile(r"/unified/lms/users"), "list_users", self._list_users),
            ("GET", re.compile(r"/unified/lms/users/([^/]+)"), "get_user", self._get_user),
            (
                "POST",
                re.compile(r"/unified/lms/users/([^/]+)/assignments"),
                "create_assignment",
                self._create_assignment,
            ),
            (
                "GET",
                re.compile(r"/unified/lms/users/([^/]+)/assignments"),
                "list_user_assignments",
                self._user_assignments,
            ),
            (
                "POST",
                re.compile(r"/unified/lms/users/([^/]+)/completions"),
                "create_completion",
                self._create_completion,
            ),
            (
                "GET",
                re.compile(r"/unified/lms/users/([^/]+)/completions"),
                "list_user_completions",
                self._user_completions,
            ),
            (
                "DELETE",
                re.compile(r"/unified/lms/users/([^/]+)/completions/([^/]+)"),
                "delete_completion",
                self._delete_completion,
            ),
            ("PUT", re.compile(r"/unified/lms/content"), "upsert_content", self._upsert_content),
            ("POST", re.compile(r"/unified/lms/content/batch"), "upsert_content_batch", self._batch_content),
            ("GET", re.compile(r"/unified/lms/assignments"), "list_assignments", self._all_assignments),
            ("GET", re.compile(r"/unified/lms/completions"), "list_completions", self._all_completions),
        ]

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0: any free port); :attr:`url` tells where."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self._url = f"http://{host}:{bound[1]}"

    @property
    def url(self) -> str:
        """The base URL to give lmsbridge as ``stackone.base_url``."""
        if self._url is None:
            raise RuntimeError("the StackOne stand-in is not started")
        return self._url

    async def close(self) -> None:
        """Stop listening (requests still hanging on a scripted delay are cut off)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- fixtures -----------------------------------------------------------------------

    def add_user(
        self,
        account: str,
        email: str,
        name: str | None = None,
        user_id: str | None = None,
        *,
        updated_at: datetime | None = None,
        active: bool | str | None = True,
    ) -> str:
        """Add (or, with a known ``user_id``, update) an LMS user; returns its StackOne id.

        ``active`` is served as given: ``False`` or ``"false"`` for a deactivated account (a leaver
        whose e-mail may also name a new, active one), ``None`` for an LMS that leaves it null.
        """
        users = self._users.setdefault(account, {})
        index = self._by_email.setdefault(account, {})
        uid = user_id or self._new_id("usr")
        now = iso(updated_at or datetime.now(UTC))
        old = users.get(uid)
        if old is not None and old.get("email"):
            index[old["email"].lower()].remove(uid)
        users[uid] = {
            "id": uid,
            "remote_id": f"remote-{uid}",
            "name": name if name is not None else email.split("@")[0],
            "email": email,
            "active": active,
            "created_at": old["created_at"] if old else now,
            "updated_at": now,
        }
        index.setdefault(email.lower(), []).append(uid)
        return uid

    def delete_user(self, account: str, user_id: str) -> None:
        """Delete an LMS user, as an administrator would: requests naming the id get 404 from now on,
        and the e-mail is free for a new user (:meth:`add_user`) with a new id."""
        user = self._users.get(account, {}).pop(user_id)
        ids = self._by_email.get(account, {}).get(str(user.get("email") or "").lower(), [])
        if user_id in ids:
            ids.remove(user_id)

    # --- what was received and written -------------------------------------------------

    def assignments(self, account: str | None = None) -> list[dict[str, Any]]:
        """Assignments created (``account``, ``user_id``, ``body``, ``id``), oldest first."""
        return [dict(a) for a in self._assignments if account is None or a["account"] == account]

    def completions(self, account: str | None = None) -> list[dict[str, Any]]:
        """Completions created (``account``, ``user_id``, ``body``, ``id``), oldest first."""
        return [dict(c) for c in self._completions if account is None or c["account"] == account]

    def written(self, *, except_users: Container[str] = (), start: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        """How many assignments and completions were created, leaving out ``except_users``' ones.

        ``start``: count from these positions of the two lists (a poller passes the totals it saw
        last, ``written()``, so each call costs what was written since, not everything).
        Copies nothing: a benchmark polling it while it measures latencies in this process does
        not stall the stand-in the way copying every record (:meth:`assignments`) would.
        """
        a0, c0 = start
        if not except_users:
            return max(0, len(self._assignments) - a0), max(0, len(self._completions) - c0)
        return (
            sum(1 for a in itertools.islice(self._assignments, a0, None) if a["user_id"] not in except_users),
            sum(1 for c in itertools.islice(self._completions, c0, None) if c["user_id"] not in except_users),
        )

    def content(self, account: str | None = None) -> dict[str, dict[str, Any]]:
        """Learning objects upserted: ``external_reference`` -> item (of one account, or all merged)."""
        if account is not None:
            return dict(self._content.get(account, {}))
        merged: dict[str, dict[str, Any]] = {}
        for items in self._content.values():
            merged.update(items)
        return merged

    def writes(self) -> int:
        """Successful create and upsert calls (a batch counts once)."""
        return self._writes

    def busiest_window(self, seconds: float = 60.0) -> int:
        """The most requests the rate limit let through in any ``seconds``-long sliding window."""
        times = sorted(self._admitted)
        best = start = 0
        for end, t in enumerate(times):
            while times[start] <= t - seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def remove(self, kind: str, record_id: str) -> dict[str, Any]:
        """Take a written ``assignment`` or ``completion`` out of the LMS, as someone deleting it there
        (or a provider losing it) would; no request is recorded. Returns what was removed."""
        records = self._assignments if kind == "assignment" else self._completions
        for index, record in enumerate(records):
            if record["id"] == record_id:
                if kind == "assignment":
                    ref = record["body"]["learning_object_external_reference"]
                    self._assigned.discard((record["account"], record["user_id"], ref))
                return records.pop(index)
        raise KeyError(record_id)

    # --- misbehaviour -------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        path_contains: str | None = None,
        account: str | None = None,
        write_before_failing: bool = False,
        delay: float = 0.0,
        body: dict[str, Any] | None = None,
        method: str | None = None,
        raw: bytes | None = None,
        query_has: str | None = None,
        every: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (with ``every``: only every
        ``every``-th matching request, the others answered as usual: a rare transient failure).

        ``write_before_failing`` performs the write first (StackOne timing out after the
        provider wrote). ``status`` 0 with ``delay`` hangs for ``delay`` seconds and then
        answers normally, for client timeouts. ``body`` replaces the error body, ``raw``
        sends these bytes as the body instead (not JSON, whatever the status). ``method``
        matches only requests with that method, ``query_has`` only those with that query parameter
        (``"next"``: a listing's later pages).
        """
        self._faults.append(
            _Fault(
                status,
                times,
                retry_after,
                path_contains,
                account,
                write_before_failing,
                delay,
                body,
                method,
                raw,
                query_has,
                every,
            )
        )

    def set_fault_rates(
        self,
        *,
        error_5xx: float = 0.0,
        burst_429: float = 0.0,
        slow: float = 0.0,
        slow_seconds: float = 0.5,
        retry_after: int = 1,
        write_5xx: float = 0.0,
        create_408: float = 0.0,
    ) -> None:
        """Random faults from now on (seeded): a share of 5xx, of 429 and of slow answers.

        ``write_5xx`` is a share of 5xx on writes only; ``create_408`` a share of creates
        written and then answered 408 (without Retry-After).
        """
        self._rates = _Rates(error_5xx, burst_429, slow, slow_seconds, retry_after, write_5xx, create_408)

    def disable_account(self, account: str, status: int = 412) -> None:
        """Answer every request for ``account`` with ``status`` (412: integration disabled)."""
        self._disabled[account] = status

    def enable_account(self, account: str) -> None:
        """Serve ``account`` again."""
        self._disabled.pop(account, None)

    # --- request handling ---------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            json=body,
            account=request.headers.get("x-account-id"),
            time=time.time(),
        )
        self.requests.append(record)
        answer = await self._answer(request, record, bad_json)
        record.status = answer.status
        if isinstance(answer.payload, bytes):  # a scripted answer that is not JSON
            return web.Response(status=answer.status, body=answer.payload, headers=answer.headers)
        return web.Response(
            status=answer.status,
            body=orjson.dumps(answer.payload),
            content_type="application/json",
            headers=answer.headers,
        )

    async def _answer(self, request: web.Request, record: RecordedRequest, bad_json: bool) -> _Answer:
        where = f"{record.method} {record.path}"
        if self._validator is not None:
            found = self._validator.check(record.method, record.path, request.query, request.headers, record.json)
            self.violations.extend(f"{where}: {v}" for v in found)
        if bad_json:
            self.violations.append(f"{where}: body is not JSON")
            return _error(400, "Request body is not valid JSON")
        if request.headers.get("Authorization") != self._auth:
            self.violations.append(f"{where}: missing or wrong HTTP Basic credentials")
            return _error(401, "Unauthorized")
        if not request.headers.get("User-Agent"):
            self.violations.append(f"{where}: no User-Agent")
            return _error(403, "Forbidden resource")
        account = record.account
        if not account:
            self.violations.append(f"{where}: no x-account-id")
            return _error(400, "x-account-id header is required")
        limited = self._over_rate_limit()
        if limited is not None:
            return limited
        if account in self._disabled:
            status = self._disabled[account]
            return _error(status, "The linked account is disabled" if status == 412 else _phrase(status))

        route = self._route(record.method, request.rel_url.raw_path)
        fault = self._take_fault(record.path, account, record.method, record.query)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.status != 0:
                if fault.write_before_failing and route is not None:
                    await self._dispatch(route, account, request, record)
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                if fault.raw is not None:
                    return _Answer(fault.status, fault.raw, headers)
                if fault.body is not None:
                    return _Answer(fault.status, fault.body, headers)
                return _error(fault.status, _phrase(fault.status), headers)
        else:
            chaos = await self._chaos_fault(route[0] if route is not None else "")
            if chaos is not None:
                if chaos.status == 408 and route is not None:
                    await self._dispatch(route, account, request, record)  # written, then timed out
                return chaos
        if route is None:
            if self._validator is None:
                self.violations.append(f"{where}: not an endpoint the stand-in knows")
            return _error(404, f"Cannot {record.method} {record.path}")
        return await self._dispatch(route, account, request, record)

    def _route(self, method: str, raw_path: str) -> tuple[str, _Handler, dict[str, str]] | None:
        for route_method, pattern, name, handler in self._routes:
            match = pattern.fullmatch(raw_path)
            if match is not None and route_method == method:
                params = {"id": unquote(match.group(1))} if match.groups() else {}
                if len(match.groups()) > 1:
                    params["sub"] = unquote(match.group(2))
                return name, handler, params
        return None

    async def _dispatch(
        self, route: tuple[str, _Handler, dict[str, str]], account: str, request: web.Request, record: RecordedRequest
    ) -> _Answer:
        name, handler, params = route
        answer = await handler(account, params, request, record.json)
        if name in _WRITES and 200 <= answer.status < 300:
            self._writes += 1
        return answer

    def _over_rate_limit(self) -> _Answer | None:
        if self.rate_limit_per_minute is None:
            return None
        now = time.monotonic()
        while self._window and self._window[0] <= now - _WINDOW:
            self._window.popleft()
        if len(self._window) >= self.rate_limit_per_minute:
            self.rate_limited += 1
            wait = max(1, math.ceil(self._window[0] + _WINDOW - now))
            return _error(429, "Too many requests", {"Retry-After": str(wait)})
        self._window.append(now)
        self._admitted.append(now)
        return None

    def _take_fault(
        self, path: str, account: str, method: str = "", query: Mapping[str, str] | None = None
    ) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(path, account, method, query):
                fault.seen += 1
                if fault.seen % fault.every:
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _chaos_fault(self, operation: str = "") -> _Answer | None:
        rates = self._rates
        if operation in _WRITES and (rates.write_5xx or rates.create_408):
            roll = self._chaos.random()
            if roll < rates.write_5xx:
                return _error(500, _phrase(500))
            if operation.startswith("create_") and roll < rates.write_5xx + rates.create_408:
                return _error(408, "Request Timeout")
        if rates.error_5xx or rates.burst_429:
            roll = self._chaos.random()
            if roll < rates.error_5xx:
                status = self._chaos.choice((500, 502, 503))
                return _error(status, _phrase(status))
            if roll < rates.error_5xx + rates.burst_429:
                return _error(429, "Too many requests", {"Retry-After": str(rates.retry_after)})
        if rates.slow and self._chaos.random() < rates.slow:
            await asyncio.sleep(rates.slow_seconds)
        return None

    # --- endpoints ----------------------------------------------------------------------

    async def _list_users(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        users = list(self._users.get(account, {}).values())
        email = request.query.get("filter[email]")
        if email is not None and self.honour_email_filter:
            by_email = self._by_email.get(account, {}).get(email.lower(), [])
            users = [self._users[account][uid] for uid in by_email]
        after = request.query.get("filter[updated_after]") or request.query.get("updated_after")
        if after is not None:
            try:
                since = _parse_time(after)
            except ValueError:
                return _error(400, "filter[updated_after] must be a date-time")
            users = [u for u in users if _parse_time(u["updated_at"]) > since]
        return self._page(users, request, "users")

    async def _get_user(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        user = self._users.get(account, {}).get(params["id"])
        if user is None:
            return _error(404, "User not found")
        return _Answer(200, {"data": user})

    async def _create_assignment(
        self, account: str, params: dict[str, str], request: web.Request, body: Any
    ) -> _Answer:
        return self._create(account, params["id"], body, "assignment")

    async def _create_completion(
        self, account: str, params: dict[str, str], request: web.Request, body: Any
    ) -> _Answer:
        return self._create(account, params["id"], body, "completion")

    def _create(self, account: str, user_id: str, body: Any, kind: str) -> _Answer:
        if user_id not in self._users.get(account, {}):
            return _error(404, "User not found")
        if not isinstance(body, dict) or not isinstance(body.get("learning_object_external_reference"), str):
            return _error(400, "learning_object_external_reference must be a string")
        ref = body["learning_object_external_reference"]
        if kind == "assignment":
            status = body.get("status")
            value = status.get("value") if isinstance(status, dict) else None
            if value is not None and value not in CREATABLE_STATUSES:
                return _error(422, f"an assignment can be created pending or in_progress, not {value!r}")
            if (account, user_id, ref) in self._assigned:
                self.conflicts += 1
                return _error(409, "Record already exists")
            self._assigned.add((account, user_id, ref))
        elif self.one_completion_per_object and any(
            (c["account"], c["user_id"], c["body"]["learning_object_external_reference"]) == (account, user_id, ref)
            for c in self._completions
        ):
            self.conflicts += 1
            return _error(409, "Record already exists")
        new_id = self._new_id("asg" if kind == "assignment" else "cmp")
        now = iso(datetime.now(UTC))
        fields = _ASSIGNMENT_FIELDS if kind == "assignment" else _COMPLETION_FIELDS
        row = {k: body[k] for k in fields if k in body}
        if kind == "completion" and self.completions_keep_day_and_whole_percent:
            _coarsen(row)
        if self.lists_without_reference:
            row.update(learning_object_external_reference=None, learning_object_id=f"cnt-{ref}")
        row.update(
            id=new_id,
            remote_id=f"remote-{new_id}",
            user_id=user_id,
            remote_user_id=f"remote-{user_id}",
            created_at=now,
            updated_at=now,
        )
        record = {
            "account": account,
            "user_id": user_id,
            "body": body,
            "id": new_id,
            "row": row,
            "received": time.perf_counter(),  # for latency benchmarks
        }
        (self._assignments if kind == "assignment" else self._completions).append(record)
        return _Answer(
            201,
            {
                "statusCode": 201,
                "message": "Record created successfully.",
                "timestamp": now,
                "data": {"id": new_id, "remote_id": row["remote_id"]},
            },
        )

    async def _delete_completion(
        self, account: str, params: dict[str, str], request: web.Request, body: Any
    ) -> _Answer:
        """Delete one completion of the user; 404 when the user or the completion is unknown."""
        if params["id"] not in self._users.get(account, {}):
            return _error(404, "User not found")
        for index, record in enumerate(self._completions):
            if (record["account"], record["user_id"], record["id"]) == (account, params["id"], params["sub"]):
                self.deleted_completions.append(self._completions.pop(index))
                now = iso(datetime.now(UTC))
                return _Answer(200, {"statusCode": 200, "message": "Record deleted successfully.", "timestamp": now})
        return _error(404, "Completion not found")

    async def _user_assignments(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        return self._user_rows(account, params["id"], self._assignments, request, "assignments")

    async def _user_completions(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        return self._user_rows(account, params["id"], self._completions, request, "completions")

    def _user_rows(
        self, account: str, user_id: str, records: list[dict[str, Any]], request: web.Request, kind: str
    ) -> _Answer:
        if user_id not in self._users.get(account, {}):
            return _error(404, "User not found")
        rows = [r["row"] for r in records if r["account"] == account and r["user_id"] == user_id]
        return self._page(rows, request, f"{kind}:{user_id}")

    async def _all_assignments(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        return self._account_rows(account, self._assignments, request, "assignments")

    async def _all_completions(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        return self._account_rows(account, self._completions, request, "completions")

    def _account_rows(self, account: str, records: list[dict[str, Any]], request: web.Request, kind: str) -> _Answer:
        user = request.query.get("user_id")
        after = request.query.get("filter[updated_after]") or request.query.get("updated_after")
        since = _parse_time(after) if after else None
        rows = [
            r["row"]
            for r in records
            if r["account"] == account
            and (user is None or r["user_id"] == user)
            and (since is None or _parse_time(r["row"]["updated_at"]) > since)
        ]
        return self._page(rows, request, kind)

    async def _upsert_content(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        problem = _content_problem(body)
        if problem:
            return _error(400, problem)
        assert isinstance(body, dict)
        ref = body["external_reference"]
        self._content.setdefault(account, {})[ref] = body  # no partial updates: the item is replaced
        return _Answer(
            201,
            {
                "statusCode": 201,
                "message": "Record upserted successfully.",
                "timestamp": iso(datetime.now(UTC)),
                "data": {"id": f"cnt-{ref}", "remote_id": f"remote-cnt-{ref}", "external_reference": ref},
            },
        )

    async def _batch_content(self, account: str, params: dict[str, str], request: web.Request, body: Any) -> _Answer:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return _error(400, "items must be an array")
        errors: list[list[str]] = []
        for item in items:
            problem = _content_problem(item)
            if problem:
                errors.append([problem])
                continue
            self._content.setdefault(account, {})[item["external_reference"]] = item
            errors.append([])
        return _Answer(
            202,
            {
                "statusCode": 202,
                "message": "Batch operation accepted",
                "timestamp": iso(datetime.now(UTC)),
                "errors": errors,
            },
        )

    # --- helpers ------------------------------------------------------------------------

    def _page(self, rows: list[dict[str, Any]], request: web.Request, kind: str) -> _Answer:
        """One page of ``rows`` by ``page_size`` (default 25) and the opaque cursor ``next``."""
        try:
            size = int(request.query.get("page_size") or DEFAULT_PAGE_SIZE)
        except ValueError:
            return _error(400, "page_size must be a number")
        if size < 1:
            return _error(400, "page_size must be at least 1")
        offset = 0
        cursor = request.query.get("next")
        if cursor:
            try:
                decoded_kind, _, number = base64.urlsafe_b64decode(cursor.encode()).decode().rpartition("@")
                offset = int(number)
            except ValueError:
                return _error(400, "Invalid cursor")
            if decoded_kind != kind or offset < 0:
                return _error(400, "Invalid cursor")
        end = offset + size
        following = base64.urlsafe_b64encode(f"{kind}@{end}".encode()).decode() if end < len(rows) else None
        return _Answer(200, {"data": rows[offset:end], "next": following})

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._ids.getrandbits(64):016x}"


@functools.lru_cache(maxsize=8)
def _validator(spec_path: str) -> SpecValidator:
    """One compiled validator per spec file, shared by every stand-in (it holds no per-request state)."""
    from lmsbridge.testing.openapi import SpecValidator

    return SpecValidator(spec_path)


def _coarsen(row: dict[str, Any]) -> None:
    """A completion row as an LMS keeping only the day and whole percents lists it."""
    if isinstance(row.get("completed_at"), str):
        row["completed_at"] = row["completed_at"][:10] + "T00:00:00.000Z"
    score = row.get("score")
    if isinstance(score, dict) and isinstance(score.get("percentage"), int | float):
        row["score"] = {**score, "percentage": round(score["percentage"])}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Answer:
    """StackOne's error shape: ``{statusCode, message, timestamp}``."""
    payload = {"statusCode": status, "message": message, "timestamp": iso(datetime.now(UTC))}
    return _Answer(status, payload, headers or {})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _content_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "Each item must be an object"
    if not isinstance(item.get("external_reference"), str) or not item["external_reference"]:
        return "Missing field: external_reference"
    return None


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
