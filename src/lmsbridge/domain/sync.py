"""Sync rules: what must be written to an LMS account for a record, and in what shape.

StackOne has no update for assignments and completions and no idempotency key, so the
rules are written as "what is still missing": at most one assignment and one completion
per (account, person, learning object), learning object first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from lmsbridge.domain.records import Rank, RecordState


class SyncStep(Enum):
    """One write towards the LMS, in the order they must happen."""

    UPSERT_CONTENT = "upsert_content"
    CREATE_ASSIGNMENT = "create_assignment"
    CREATE_COMPLETION = "create_completion"


@dataclass(frozen=True, slots=True)
class AccountSync:
    """What is already written to one account for one record."""

    content_known: bool = False
    assignment_created: bool = False
    completion_created: bool = False


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """The writes still missing, in order; empty when the account is up to date."""

    steps: tuple[SyncStep, ...]

    @property
    def done(self) -> bool:
        """True when nothing is left to write."""
        return not self.steps


def plan_sync(state: RecordState, synced: AccountSync) -> SyncPlan:
    """Decide the writes still missing for ``state`` on one account."""
    steps: list[SyncStep] = []
    needs_assignment = not synced.assignment_created
    needs_completion = state.rank is Rank.COMPLETED and not synced.completion_created
    if (needs_assignment or needs_completion) and not synced.content_known:
        steps.append(SyncStep.UPSERT_CONTENT)
    if needs_assignment:
        steps.append(SyncStep.CREATE_ASSIGNMENT)
    if needs_completion:
        steps.append(SyncStep.CREATE_COMPLETION)
    return SyncPlan(tuple(steps))


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as StackOne's examples write it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assignment_status(state: RecordState) -> str:
    """StackOne's assignment ``status.value`` for a record."""
    return {Rank.ASSIGNED: "pending", Rank.IN_PROGRESS: "in_progress", Rank.COMPLETED: "completed"}[state.rank]


def assignment_body(state: RecordState) -> dict[str, Any]:
    """The Create User Assignment body; only fields the spec defines."""
    body: dict[str, Any] = {
        "learning_object_external_reference": state.learning_object_ref,
        "status": {"value": assignment_status(state)},
        "progress": state.progress if state.progress is not None else 0,
    }
    if state.assigned_at is not None:
        body["assigned_at"] = iso(state.assigned_at)
    if state.due_date is not None:
        body["due_date"] = iso(state.due_date)
    return body


def completion_body(state: RecordState) -> dict[str, Any]:
    """The Create User Completion body; only fields the spec defines."""
    body: dict[str, Any] = {
        "learning_object_external_reference": state.learning_object_ref,
        "result": {"value": "Pass" if state.passed is not False else "Fail"},
    }
    if state.completed_at is not None:
        body["completed_at"] = iso(state.completed_at)
    if state.score is not None:
        body["score"] = {"percentage": state.score}
    return body


def content_body(external_reference: str, title: str) -> dict[str, Any]:
    """The full content upsert item (the upsert is not partial, so every field we own is sent)."""
    return {"external_reference": external_reference, "title": title, "active": True}


# Sync status of a (record, account) row.
PENDING = "pending"
SYNCED = "synced"
PARKED = "parked"
DEAD = "dead"
