"""A stand-in for Exec's API (specs 000/001): a real aiohttp server listing scenario assignments.

``GET /rest/v1/scenarios/assignments`` answers as 001 describes: ``{"data": [Assignment],
"pagination": {"page", "page_size", "total_count", "total_pages"}}``, page-numbered from 1,
``page_size`` 1-100 (default 50), ``400 invalid_pagination`` otherwise, filtered by ``status``,
``user_emails`` and ``scenario_ids``. The Bearer key is checked (401 in Exec's error shape).
It can fail on demand: the next calls (:meth:`ExecStandIn.fail_next`), a seeded share of
calls (:meth:`ExecStandIn.set_failure_rate`, 500 or 429 with ``Retry-After``), or one page
served in a shape that is not the documented one (:meth:`ExecStandIn.corrupt_page`), or one page
failing until healed (:meth:`ExecStandIn.fail_page`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from lmsbridge.testing.platform import PlatformStandIn

PATH = "/rest/v1/scenarios/assignments"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_TYPES = {400: "invalid_request", 401: "authentication_error", 404: "not_found", 429: "rate_limit_error"}


class ExecStandIn(PlatformStandIn):
    """Exec's assignment list, in process, on a real socket."""

    def __init__(self, api_key: str = "exec_live_" + "a" * 40, *, seed: int = 0) -> None:
        super().__init__(api_key, seed=seed)
        self._corrupt: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self._down_pages: dict[int, int] = {}
        self.requests: list[dict[str, str]] = []
        self.failures = 0

    def _routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self._list)

    # --- the tenant ---------------------------------------------------------------------

    def put(self, assignment: dict[str, Any]) -> None:
        """Add or replace an ``Assignment`` (000's object); listed in the order first added."""
        self._assignments[str(assignment["id"])] = assignment

    def get(self, assignment_id: str) -> dict[str, Any]:
        """The stored assignment."""
        return self._assignments[assignment_id]

    @property
    def assignments(self) -> list[dict[str, Any]]:
        """Every assignment, in list order."""
        return list(self._assignments.values())

    # --- misbehaviour -------------------------------------------------------------------

    def corrupt_page(self, page: int, mutate: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Serve ``page`` as ``mutate`` rewrites its document (a shape that is not 001's)."""
        self._corrupt[page] = mutate

    def fail_page(self, page: int, status: int = 503) -> None:
        """Answer every request for ``page`` with ``status`` until :meth:`heal` (an outage mid-listing)."""
        self._down_pages[page] = status

    def heal(self) -> None:
        """Stop every failure: scripted, random, per page and corrupt pages."""
        self._faults.clear()
        self._rate = 0.0
        self._down_pages.clear()
        self._corrupt.clear()

    @property
    def list_calls(self) -> int:
        """Requests to the list endpoint (every answer counted, failures included)."""
        return len(self.requests)

    # --- handler ------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if not self._authorised(request):
            return _error(401, "Invalid or inactive API key", code="invalid_api_key")
        fault = self._take_fault()
        if fault is not None:
            self.failures += 1
            return _error(fault.status, fault.message, headers=fault.headers)
        try:
            page = int(request.query.get("page", "1"))
            size = int(request.query.get("page_size", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            return _error(400, "Invalid pagination parameters", code="invalid_pagination")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return _error(400, "Invalid pagination parameters", code="invalid_pagination")
        if page in self._down_pages:
            self.failures += 1
            return _error(self._down_pages[page], "injected outage", headers={"Retry-After": "0"})
        rows = self._filtered(request)
        total_pages = math.ceil(len(rows) / size)
        document: dict[str, Any] = {
            "data": rows[(page - 1) * size : page * size],
            "pagination": {"page": page, "page_size": size, "total_count": len(rows), "total_pages": total_pages},
        }
        if page in self._corrupt:
            document = self._corrupt[page](document)
        return web.json_response(document)

    def _filtered(self, request: web.Request) -> list[dict[str, Any]]:
        statuses = _csv(request.query.getall("status", []))
        emails = {e.lower() for e in _csv(request.query.getall("user_emails", []))}
        scenarios = set(_csv(request.query.getall("scenario_ids", [])))
        return [
            a
            for a in self._assignments.values()
            if (not statuses or a.get("status") in statuses)
            and (not emails or str(a["user"]["email"]).lower() in emails)
            and (not scenarios or a["scenario"]["id"] in scenarios)
        ]


def _csv(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _error(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
    error: dict[str, str] = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    return web.json_response({"error": error}, status=status, headers=headers)
