"""A stand-in for the security-training platform's API (spec 003): a real aiohttp server.

Answers ``GET /api/public/v1/assignments/{id}`` with what :meth:`LimeplateStandIn.add_assignment`
stored, checks the Bearer key (401 in the platform's error shape otherwise), and can be told
to fail the next requests. :func:`make_team_assignment` builds a realistic document.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from lmsbridge.testing.webhooks import T0, limeplate_assignment

_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found", 429: "rate_limit_error"}


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: int | None


class LimeplateStandIn:
    """The platform's assignment API, in process, on a real socket."""

    def __init__(self, api_key: str = "scs_live_test") -> None:
        self._key = api_key
        self._assignments: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """Base URL of the running server (``""`` before :meth:`start`)."""
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving (``port=0`` picks a free port)."""
        app = web.Application()
        app.router.add_get("/api/public/v1/assignments/{id}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]
        self._url = f"http://{host}:{bound}"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_assignment(self, assignment: dict[str, Any]) -> None:
        """Serve ``assignment`` (the ``GET /assignments/{id}`` document, ``userProgress`` included)."""
        self._assignments[str(assignment["id"])] = assignment

    def fail_next(self, status: int, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` authorised requests with ``status`` (and ``Retry-After`` if given)."""
        self._faults.append(_Fault(status, times, retry_after))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self._key}":
            return _error(401, "Invalid or inactive API key")
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            return _error(fault.status, "injected fault", headers)
        found = self._assignments.get(request.match_info["id"])
        if found is None:
            return _error(404, f"Assignment not found: {request.match_info['id']}")
        return web.json_response(found)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
    return web.json_response({"error": {"type": kind, "message": message}}, status=status, headers=headers)


def make_team_assignment(
    n_members: int,
    *,
    assignment_id: str | None = None,
    target_id: str = "sql-injection",
    title: str = "SQL Injection",
    domain: str = "acme.example",
    created_at: datetime = T0,
) -> dict[str, Any]:
    """A realistic ``GET /assignments/{id}`` document (spec 003) for a team of ``n_members``.

    Members are ``member000@{domain}``, ``member001@{domain}``, ...; none has started.
    """
    base = limeplate_assignment(
        assignment_id or str(uuid.uuid4()), target_id=target_id, title=title, created_at=created_at
    )
    return {
        **base,
        "note": "Follow-up to the May audit finding.",
        "assignedByName": "API Key: CI Ingestion",
        "totalAssignees": n_members,
        "userProgress": [
            {
                "userId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"member-{i}@{domain}")),
                "name": f"Member {i}",
                "email": f"member{i:03d}@{domain}",
                "totalChallenges": 8,
                "completedChallenges": 0,
                "progressPercent": 0,
                "completedAt": None,
                "isOverdue": False,
            }
            for i in range(n_members)
        ],
    }
