"""The canonical assignment event: what every platform adapter produces and the queue carries."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EventType = Literal["assignment.created", "assignment.completed"]
ASSIGNMENT_CREATED: EventType = "assignment.created"
ASSIGNMENT_COMPLETED: EventType = "assignment.completed"


class LearningObject(BaseModel):
    """The training as the LMS knows it: a stable external reference and a title."""

    model_config = ConfigDict(frozen=True)

    external_reference: str = Field(min_length=1)
    title: str


class PersonProgress(BaseModel):
    """One person's side of an assignment, as the platform reported it."""

    model_config = ConfigDict(frozen=True)

    email: str = Field(min_length=3)
    name: str | None = None
    platform_user_id: str | None = None
    progress: float | None = Field(None, ge=0, le=100)
    completed_at: datetime | None = None
    passed: bool | None = None
    score: float | None = None

    @property
    def person_key(self) -> str:
        """The key a person is known by across events: the lower-cased e-mail."""
        return self.email.strip().lower()


class AssignmentEvent(BaseModel):
    """One accepted webhook, normalised. ``people`` is empty until an assignment is expanded."""

    model_config = ConfigDict(frozen=True)

    message_id: str = Field(min_length=1, max_length=255)
    source: str
    platform: str
    type: EventType
    occurred_at: datetime
    received_at: datetime
    correlation_id: str
    assignment_id: str = Field(min_length=1)
    learning_object: LearningObject
    assigned_at: datetime | None = None
    due_date: datetime | None = None
    people: tuple[PersonProgress, ...] = ()
    needs_expansion: bool = False
