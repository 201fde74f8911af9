"""The security-training platform ("limeplate", spec 003): camelCase bodies.

``assignment.created`` names no people: it becomes an event that needs expansion through
the platform's API (``GET /api/public/v1/assignments/{id}``, see :mod:`.limeplate_api`).
``assignment.completed`` carries the one member who reached 100 %, as ``data.user``.
The learning object is ``limeplate:{targetType}:{targetId}``, titled ``targetTitle``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.domain.events import EMAIL_PATTERN, MAX_REFERENCE, Email, Identifier, Reference, Text
from lmsbridge.errors import UnusableBody
from lmsbridge.vendors.envelope import Envelope, Lenient, UtcDatetime, UtcDeadline, build, validate


class Camel(Lenient):
    """The platform's camelCase JSON, as snake_case attributes."""

    model_config = ConfigDict(alias_generator=to_camel)


class Assignment(Camel):
    """An assignment as ``GET /assignments`` lists it (the fields lmsbridge uses)."""

    id: Identifier
    assignee_type: Literal["user", "team", "org"]
    target_type: Identifier
    target_id: Reference
    target_title: Text = Field(min_length=1)
    deadline: UtcDeadline | None = None
    created_at: UtcDatetime | None = None


class Member(Camel):
    """One person's progress: a ``userProgress`` row, or a completion's ``data.user``."""

    user_id: Identifier | None = None
    name: Text | None = None
    email: Email = Field(max_length=320, pattern=EMAIL_PATTERN)
    progress_percent: float | None = Field(None, ge=0, le=100)
    completed_at: UtcDatetime | None = None

    def person(self, *, passed: bool | None = None) -> PersonProgress:
        """As the core's :class:`PersonProgress`."""
        return PersonProgress(
            email=self.email,
            name=self.name,
            platform_user_id=self.user_id,
            progress=self.progress_percent,
            completed_at=self.completed_at,
            passed=passed,
        )


class CreatedData(Lenient):
    assignment: Assignment


class CompletedData(Lenient):
    assignment: Assignment
    user: Member


def learning_object(assignment: Assignment) -> LearningObject:
    """The stable LMS reference of an assignment's target, e.g. ``limeplate:topic:sql-injection``.

    Raises ``ValueError`` when the reference would not fit its column (:data:`MAX_REFERENCE`).
    """
    reference = f"limeplate:{assignment.target_type}:{assignment.target_id}"
    if len(reference) > MAX_REFERENCE:
        raise ValueError(f"the learning object reference would be longer than {MAX_REFERENCE} characters")
    return LearningObject(external_reference=reference, title=assignment.target_title)


def to_event(
    envelope: Envelope, *, message_id: str, source: str, received_at: datetime, correlation_id: str
) -> AssignmentEvent:
    """The canonical event for a limeplate envelope of a handled type."""
    completed = envelope.type == "assignment.completed"
    people: tuple[PersonProgress, ...] = ()
    if completed:
        done = validate(CompletedData, envelope.data, prefix="data")
        assignment, people = done.assignment, (done.user.person(passed=True),)
    else:
        assignment = validate(CreatedData, envelope.data, prefix="data").assignment
    try:
        target = learning_object(assignment)
    except ValueError as exc:
        raise UnusableBody(f"{TARGET_ID}: {exc}", code="invalid_body", path=TARGET_ID) from None
    return build(
        lambda: AssignmentEvent(
            message_id=message_id,
            source=source,
            platform="limeplate",
            type="assignment.completed" if completed else "assignment.created",
            occurred_at=envelope.timestamp or received_at,
            received_at=received_at,
            correlation_id=correlation_id,
            assignment_id=assignment.id,
            learning_object=target,
            assigned_at=assignment.created_at,
            due_date=assignment.deadline,
            people=people,
            needs_expansion=not completed,
        ),
        {"message_id": "id", "assignment_id": "data.assignment.id"},
    )


TARGET_ID = "data.assignment.targetId"
