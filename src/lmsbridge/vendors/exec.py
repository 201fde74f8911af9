"""The sales-practice platform Exec (specs 000/001): snake_case ``Assignment`` objects.

Both event types carry the whole assignment, person included. A completion is a pass when
``status`` is ``completed`` and a fail when it is ``did_not_pass``; ``best_score`` is the
percentage. Exec has no completion time, so the core uses the envelope's ``timestamp``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.errors import UnusableBody
from lmsbridge.vendors.envelope import Envelope, Lenient, UtcDatetime, validate


class User(Lenient):
    id: str | None = None
    email: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    first_name: str | None = None
    last_name: str | None = None


class Scenario(Lenient):
    id: str | None = None
    name: str = Field(min_length=1)
    slug: str | None = None


class Assignment(Lenient):
    """Exec's ``Assignment`` (the fields lmsbridge uses)."""

    id: str = Field(min_length=1, max_length=255)
    user: User
    scenario: Scenario
    status: str
    due_date: UtcDatetime | None = None
    best_score: float | None = Field(None, ge=0, le=100)
    created_at: UtcDatetime | None = None


def to_event(
    envelope: Envelope, *, message_id: str, source: str, received_at: datetime, correlation_id: str
) -> AssignmentEvent:
    """The canonical event for an Exec envelope of a handled type."""
    a = validate(Assignment, envelope.data, prefix="data")
    if not (a.scenario.slug or a.scenario.id):
        raise UnusableBody("data.scenario: needs a slug or an id", path="data.scenario.slug")
    completed = envelope.type == "assignment.completed"
    if completed and a.status not in ("completed", "did_not_pass"):
        raise UnusableBody("data.status: a completion must be 'completed' or 'did_not_pass'", path="data.status")
    name = " ".join(p for p in (a.user.first_name, a.user.last_name) if p) or None
    person = PersonProgress(
        email=a.user.email,
        name=name,
        platform_user_id=a.user.id,
        progress=None if completed else 0.0,
        passed=(a.status == "completed") if completed else None,
        score=a.best_score if completed else None,
    )
    return AssignmentEvent(
        message_id=message_id,
        source=source,
        platform="exec",
        type="assignment.completed" if completed else "assignment.created",
        occurred_at=envelope.timestamp or received_at,
        received_at=received_at,
        correlation_id=correlation_id,
        assignment_id=a.id,
        learning_object=LearningObject(
            external_reference=f"exec:scenario:{a.scenario.slug or a.scenario.id}", title=a.scenario.name
        ),
        assigned_at=a.created_at,
        due_date=a.due_date,
        people=(person,),
    )
