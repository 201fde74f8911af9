"""Realistic webhook bodies for both platforms, and a sender that signs and posts them.

Used by the demo, the tests and the benchmarks; the bodies follow ../shared/specs/webhooks.md.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from lmsbridge.vendors import Signer, build_signer

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def limeplate_assignment(
    assignment_id: str,
    *,
    assignee_type: str = "team",
    target_id: str = "sql-injection",
    title: str = "SQL Injection",
    created_at: datetime = T0,
) -> dict[str, Any]:
    """An assignment as the security-training platform's ``GET /assignments`` lists it."""
    return {
        "id": assignment_id,
        "contentArea": "practice",
        "assigneeType": assignee_type,
        "assigneeId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"assignee:{assignment_id}")),
        "assigneeName": "Payments",
        "targetType": "topic",
        "targetId": target_id,
        "targetTitle": title,
        "deadline": _iso(created_at + timedelta(days=14)),
        "isMandatory": True,
        "isActive": True,
        "isOverdue": False,
        "avgProgress": 0,
        "totalAssignees": 12,
        "completedAssignees": 0,
        "createdAt": _iso(created_at),
    }


def limeplate_created(assignment: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """An ``assignment.created`` envelope from the security-training platform."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "assignment.created",
        "timestamp": assignment["createdAt"],
        "data": {"assignment": assignment},
    }


def limeplate_completed(
    assignment: dict[str, Any], email: str, *, name: str = "", completed_at: datetime = T0, event_id: str | None = None
) -> dict[str, Any]:
    """An ``assignment.completed`` envelope for one member who reached 100 %."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": "assignment.completed",
        "timestamp": _iso(completed_at),
        "data": {
            "assignment": assignment,
            "user": {
                "userId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{email}")),
                "name": name or email.split("@")[0].replace(".", " ").title(),
                "email": email,
                "progressPercent": 100,
                "completedAt": _iso(completed_at),
                "totalChallenges": 8,
                "completedChallenges": 8,
            },
        },
    }


def exec_assignment(
    assignment_id: str,
    email: str,
    *,
    scenario: str = "discovery-call",
    name: str = "Discovery Call",
    status: str = "not_started",
    best_score: float | None = None,
    created_at: datetime = T0,
) -> dict[str, Any]:
    """Exec's ``Assignment`` object (000)."""
    first, _, last = email.split("@")[0].partition(".")
    return {
        "id": assignment_id,
        "user": {
            "id": f"u_{uuid.uuid5(uuid.NAMESPACE_URL, email).hex[:12]}",
            "email": email,
            "first_name": first.title(),
            "last_name": last.title(),
        },
        "scenario": {"id": f"s_{scenario[:10]}", "name": name, "slug": scenario},
        "status": status,
        "due_date": _iso(created_at + timedelta(days=14)),
        "best_score": best_score,
        "best_rank": None,
        "attempt_count": 0 if status == "not_started" else 2,
        "attempt_min": 1,
        "attempt_max": 5,
        "rank_min": "silver",
        "program": None,
        "created_at": _iso(created_at),
    }


def exec_event(
    kind: str, assignment: dict[str, Any], *, at: datetime = T0, event_id: str | None = None
) -> dict[str, Any]:
    """An Exec envelope (``assignment.created`` or ``assignment.completed``)."""
    return {"id": event_id or f"evt_{uuid.uuid4().hex}", "type": kind, "timestamp": _iso(at), "data": assignment}


@dataclass
class WebhookSender:
    """Signs bodies the way a platform would and POSTs them to the receiver."""

    base_url: str
    secret: str
    scheme: str = "standard-webhooks"
    session: aiohttp.ClientSession | None = None
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        self.signer = build_signer(self.scheme, self.secret)

    def sign(self, body: bytes, *, message_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
        """Headers for ``body`` (Content-Type included)."""
        headers = self.signer.sign(
            body, message_id=message_id or f"msg_{uuid.uuid4().hex}", timestamp=timestamp or int(time.time())
        )
        return {"Content-Type": "application/json", **headers}

    async def post(
        self, source: str, envelope: dict[str, Any], *, message_id: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST ``envelope`` to ``/webhooks/{source}``; returns (status, JSON body)."""
        body = orjson.dumps(envelope)
        headers = self.sign(body, message_id=message_id or str(envelope.get("id") or uuid.uuid4().hex))
        session = self.session or aiohttp.ClientSession()
        try:
            async with session.post(f"{self.base_url}/webhooks/{source}", data=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
        finally:
            if self.session is None:
                await session.close()
