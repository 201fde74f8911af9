"""A stand-in for the security-training platform's API (spec 003): a real aiohttp server.

Answers ``GET /api/public/v1/assignments/{id}`` with what :meth:`LimeplateStandIn.add_assignment`
stored, and ``GET /api/public/v1/assignments`` with every assignment, active and inactive, as
003 lists them: without ``userProgress``, ``note`` and ``assignedByName``, with the aggregates
(``totalAssignees``, ``completedAssignees``, ``avgProgress``) computed from the members. Checks
the Bearer key (401 in the platform's error shape otherwise), and can be told to fail the next
requests or a seeded share of them. :func:`make_team_assignment` builds a realistic document.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from lmsbridge.testing.platform import PlatformStandIn
from lmsbridge.testing.webhooks import T0, limeplate_assignment

_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found", 429: "rate_limit_error"}


class LimeplateStandIn(PlatformStandIn):
    """The platform's assignment API, in process, on a real socket."""

    def __init__(self, api_key: str = "scs_live_test") -> None:
        super().__init__(api_key)
        self.requests: list[tuple[str, str]] = []

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/api/public/v1/assignments", self._list)
        app.router.add_get("/api/public/v1/assignments/{id}", self._get)

    def add_assignment(self, assignment: dict[str, Any]) -> None:
        """Serve ``assignment`` (the ``GET /assignments/{id}`` document, ``userProgress`` included)."""
        self._assignments[str(assignment["id"])] = assignment

    def set_progress(
        self, assignment_id: str, email: str, percent: float, completed_at: datetime | None = None
    ) -> None:
        """Move one member's progress (what the platform would do as they work; no webhook is sent)."""
        for row in self._assignments[assignment_id]["userProgress"]:
            if row["email"] == email:
                row["progressPercent"] = percent
                row["completedChallenges"] = round(row.get("totalChallenges", 8) * percent / 100)
                row["completedAt"] = completed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if completed_at else None
                return
        raise KeyError(email)

    def detail_calls(self) -> list[str]:
        """Assignment ids read one by one (``GET /assignments/{id}``), in order."""
        prefix = "/api/public/v1/assignments/"
        return [path[len(prefix) :] for _, path in self.requests if path.startswith(prefix)]

    def list_calls(self) -> int:
        """Calls to the list (``GET /assignments``)."""
        return sum(1 for _, path in self.requests if path == "/api/public/v1/assignments")

    def _refusal(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.method, request.path))
        if not self._authorised(request):
            return _error(401, "Invalid or inactive API key")
        fault = self._take_fault()
        return None if fault is None else _error(fault.status, fault.message, fault.headers)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        found = self._assignments.get(request.match_info["id"])
        if found is None:
            return _error(404, f"Assignment not found: {request.match_info['id']}")
        return web.json_response({**found, **_aggregates(found)})

    async def _list(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        hidden = ("userProgress", "note", "assignedByName")
        rows = [
            {**{k: v for k, v in a.items() if k not in hidden}, **_aggregates(a)} for a in self._assignments.values()
        ]
        return web.json_response(rows)


def _aggregates(assignment: dict[str, Any]) -> dict[str, Any]:
    """``totalAssignees``, ``completedAssignees`` and ``avgProgress`` from the members (as stored if none).

    A row that is not an object (a broken row a test serves) counts as a member with no progress.
    """
    members = assignment.get("userProgress")
    if members is None:
        return {}
    progress = [float((m.get("progressPercent") if isinstance(m, dict) else 0) or 0) for m in members]
    return {
        "totalAssignees": len(members),
        "completedAssignees": sum(1 for p in progress if p >= 100),
        "avgProgress": round(sum(progress) / len(progress), 1) if progress else 0,
    }


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
