"""Sync rules: only what is missing is written, learning object first, in the spec's shape."""

from __future__ import annotations

from datetime import UTC, datetime

from lmsbridge.domain import AccountSync, Completion, Rank, RecordState, SyncStep, plan_sync
from lmsbridge.domain.sync import assignment_body, completion_body

ASSIGNED = RecordState(
    rank=Rank.ASSIGNED,
    learning_object_ref="limeplate:topic:sql-injection",
    title="SQL Injection",
    email="jane@acme.example",
    assigned_at=datetime(2026, 5, 29, 8, tzinfo=UTC),
    due_date=datetime(2026, 6, 12, 23, 59, 59, tzinfo=UTC),
    progress=0,
)
DONE = RecordState(
    rank=Rank.COMPLETED,
    learning_object_ref="exec:scenario:discovery-call",
    title="Discovery Call",
    email="jane@acme.example",
    completed_at=datetime(2026, 6, 4, 10, 18, 42, tzinfo=UTC),
    passed=False,
    score=41.5,
    progress=100,
)


def test_new_assignment_needs_content_then_assignment() -> None:
    """A fresh record on a fresh account: upsert the learning object, then create the assignment."""
    assert plan_sync(ASSIGNED, AccountSync()).steps == (SyncStep.UPSERT_CONTENT, SyncStep.CREATE_ASSIGNMENT)


def test_completed_first_pushes_assignment_and_completion() -> None:
    """A completion arriving first writes the assignment and the completion; the assignment goes
    ``in_progress`` (100 %): StackOne creates assignments pending or in progress, never completed."""
    assert plan_sync(DONE, AccountSync(content_known=True)).steps == (
        SyncStep.CREATE_ASSIGNMENT,
        SyncStep.CREATE_COMPLETION,
    )
    assert assignment_body(DONE)["status"] == {"value": "in_progress"}
    assert assignment_body(DONE)["progress"] == 100


def test_nothing_left_means_done() -> None:
    """Once assignment and completion are written, there is nothing to do."""
    written = Completion(False, 41.5, DONE.completed_at)
    assert plan_sync(DONE, AccountSync(True, True, written)).done
    assert plan_sync(ASSIGNED, AccountSync(True, True, None)).done


def test_bodies_use_spec_fields_and_formats() -> None:
    """Bodies carry the reference, capitalised results, percentages and RFC 3339 UTC times."""
    assert assignment_body(ASSIGNED) == {
        "learning_object_external_reference": "limeplate:topic:sql-injection",
        "status": {"value": "pending"},
        "progress": 0,
        "assigned_at": "2026-05-29T08:00:00.000Z",
        "due_date": "2026-06-12T23:59:59.000Z",
    }
    assert completion_body(DONE) == {
        "learning_object_external_reference": "exec:scenario:discovery-call",
        "result": {"value": "Fail"},
        "completed_at": "2026-06-04T10:18:42.000Z",
        "score": {"percentage": 41.5},
    }
