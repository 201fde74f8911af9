"""The security-training platform ("limeplate", spec 003): camelCase bodies.

``assignment.created`` names no people: it becomes an event that needs expansion through
the platform's API (``GET /api/public/v1/assignments/{id}``). ``assignment.completed``
carries the one member who reached 100 %.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.vendors.envelope import Envelope, Lenient, UtcDatetime, validate


class Assignment(Lenient):
    """An assignment as ``GET /assignments`` lists it (the fields lmsbridge uses)."""

    id: str = Field(min_length=1, max_length=255)
    contentArea: str | None = None
    assigneeType: Literal["user", "team", "org"]
    assigneeId: str | None = None
    targetType: str = Field(min_length=1)
    targetId: str = Field(min_length=1)
    targetTitle: str = Field(min_length=1)
    deadline: UtcDatetime | None = None
    createdAt: UtcDatetime | None = None


class Member(Lenient):
    """One person's progress (``userProgress`` rows and ``data.user``)."""

    userId: str | None = None
    name: str | None = None
    email: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")
    progressPercent: float | None = Field(None, ge=0, le=100)
    completedAt: UtcDatetime | None = None

    def person(self, *, completed: bool = False) -> PersonProgress:
        """As the core's :class:`PersonProgress`."""
        return PersonProgress(
            email=self.email,
            name=self.name,
            platform_user_id=self.userId,
            progress=self.progressPercent,
            completed_at=self.completedAt,
            passed=True if completed else None,
        )


class CreatedData(Lenient):
    assignment: Assignment


class CompletedData(Lenient):
    assignment: Assignment
    user: Member


def learning_object(assignment: Assignment) -> LearningObject:
    """The stable LMS reference of an assignment's target, e.g. ``limeplate:topic:sql-injection``."""
    return LearningObject(
        external_reference=f"limeplate:{assignment.targetType}:{assignment.targetId}", title=assignment.targetTitle
    )


def to_event(
    envelope: Envelope, *, message_id: str, source: str, received_at: datetime, correlation_id: str
) -> AssignmentEvent:
    """The canonical event for a limeplate envelope of a handled type."""
    occurred = envelope.timestamp or received_at
    common = {
        "message_id": message_id,
        "source": source,
        "platform": "limeplate",
        "occurred_at": occurred,
        "received_at": received_at,
        "correlation_id": correlation_id,
    }
    if envelope.type == "assignment.created":
        data = validate(CreatedData, envelope.data, prefix="data")
        a = data.assignment
        return AssignmentEvent(
            type="assignment.created",
            assignment_id=a.id,
            learning_object=learning_object(a),
            assigned_at=a.createdAt,
            due_date=a.deadline,
            needs_expansion=True,
            **common,
        )
    done = validate(CompletedData, envelope.data, prefix="data")
    a = done.assignment
    return AssignmentEvent(
        type="assignment.completed",
        assignment_id=a.id,
        learning_object=learning_object(a),
        assigned_at=a.createdAt,
        due_date=a.deadline,
        people=(done.user.person(completed=True),),
        **common,
    )
