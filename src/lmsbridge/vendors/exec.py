"""The sales-practice platform Exec (specs 000/001): snake_case ``Assignment`` objects.

Both event types carry the whole assignment, person included, as ``data``. A completion is
a pass when ``status`` is ``completed`` and a fail when it is ``did_not_pass`` (anything else
is 422 at ``data.status``); ``best_score`` is the percentage. An ``in_progress`` assignment
has begun: its LMS assignment is created ``in_progress``, at 0 % (Exec gives no percentage).
Exec has no completion time, so ``completed_at`` stays ``None`` and the core uses the
envelope's ``timestamp``. The learning object is ``exec:scenario:{slug, else id}``, titled
with the scenario's ``name``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.domain.events import EMAIL_PATTERN, MAX_REFERENCE, Email, Identifier, Reference, Text
from lmsbridge.errors import UnusableBody
from lmsbridge.vendors.envelope import Envelope, Lenient, UtcDatetime, UtcDeadline, build, validate

OUTCOMES = {"completed": True, "did_not_pass": False}


class User(Lenient):
    id: Identifier | None = None
    email: Email = Field(max_length=320, pattern=EMAIL_PATTERN)
    first_name: Text | None = None
    last_name: Text | None = None


class Scenario(Lenient):
    id: Identifier | None = None
    name: Text = Field(min_length=1)
    slug: Reference | None = None


class Assignment(Lenient):
    """Exec's ``Assignment`` (the fields lmsbridge uses)."""

    id: Identifier
    user: User
    scenario: Scenario
    status: str | None = None
    due_date: UtcDeadline | None = None
    best_score: float | None = Field(None, ge=0, le=100)
    created_at: UtcDatetime | None = None


def to_event(
    envelope: Envelope, *, message_id: str, source: str, received_at: datetime, correlation_id: str
) -> AssignmentEvent:
    """The canonical event for an Exec envelope of a handled type."""
    a = validate(Assignment, envelope.data, prefix="data")
    target = a.scenario.slug or a.scenario.id
    if not target:
        raise UnusableBody("data.scenario: needs a slug or an id", code="invalid_body", path="data.scenario.slug")
    where = "data.scenario.slug" if a.scenario.slug else "data.scenario.id"
    reference = f"exec:scenario:{target}"
    if len(reference) > MAX_REFERENCE:
        raise UnusableBody(
            f"{where}: makes the learning object reference longer than {MAX_REFERENCE} characters",
            code="invalid_body",
            path=where,
        )
    completed = envelope.type == "assignment.completed"
    if completed and a.status not in OUTCOMES:
        raise UnusableBody(
            "data.status: a completion must be 'completed' or 'did_not_pass'", code="invalid_body", path="data.status"
        )

    def make() -> AssignmentEvent:
        person = PersonProgress(
            email=a.user.email,
            name=" ".join(p for p in (a.user.first_name, a.user.last_name) if p) or None,
            platform_user_id=a.user.id,
            progress=None if completed else 0.0,
            started=not completed and a.status == "in_progress",
            passed=OUTCOMES[a.status or ""] if completed else None,
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
            learning_object=LearningObject(external_reference=reference, title=a.scenario.name),
            assigned_at=a.created_at,
            due_date=a.due_date,
            people=(person,),
        )

    return build(make, {**PATHS, "external_reference": where})


PATHS = {
    "message_id": "id",
    "assignment_id": "data.id",
    "title": "data.scenario.name",
    "email": "data.user.email",
    "name": "data.user.first_name",
    "platform_user_id": "data.user.id",
}
"""Where the canonical event's fields come from in an Exec body (for 422 paths)."""
