"""A stand-in for the security-training platform's API (spec 003): a real aiohttp server.

Answers ``GET /api/public/v1/assignments/{id}`` with what :meth:`add_assignment` stored,
checks the Bearer key, and can be told to fail the next requests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lmsbridge.testing.webhooks import limeplate_assignment


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: int | None


class LimeplateStandIn:
    """The platform's assignment API, in process."""

    def __init__(self, *, api_key: str = "scs_live_test") -> None:
        self._key = api_key
        self._assignments: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving."""
        app = web.Application()
        app.router.add_get("/api/public/v1/assignments/{id}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._url = f"http://{host}:{sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    def add_assignment(self, assignment: dict[str, Any]) -> None:
        """Serve ``assignment`` (the ``GET /assignments/{id}`` document, ``userProgress`` included)."""
        self._assignments[str(assignment["id"])] = assignment

    def fail_next(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` requests with ``status``."""
        self._faults.append(_Fault(status, times, retry_after))

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self._key}":
            return _error(401, "authentication_error", "Invalid or inactive API key")
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            return _error(fault.status, "server_error", "injected fault", headers)
        found = self._assignments.get(request.match_info["id"])
        if found is None:
            return _error(404, "not_found", f"Assignment not found: {request.match_info['id']}")
        return web.json_response(found)


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status, headers=headers)


def make_team_assignment(
    n_members: int,
    *,
    assignment_id: str | None = None,
    target_id: str = "sql-injection",
    title: str = "SQL Injection",
    domain: str = "acme.example",
) -> dict[str, Any]:
    """A realistic ``GET /assignments/{id}`` document for a team of ``n_members``."""
    base = limeplate_assignment(assignment_id or str(uuid.uuid4()), target_id=target_id, title=title)
    members = [
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
    ]
    return {
        **base,
        "totalAssignees": n_members,
        "note": "Follow-up to the May audit finding.",
        "assignedByName": "API Key: CI Ingestion",
        "userProgress": members,
    }
