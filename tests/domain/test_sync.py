"""Sync rules: only what is missing is written, learning object first, in the spec's shape."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lmsbridge.domain import AccountSync, Completion, Rank, RecordState, SyncStep, plan_sync
from lmsbridge.domain.sync import assignment_body, completion_body, later_same_title, newer_title, same_completion

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


def test_a_plans_first_create_is_the_one_whose_intent_comes_first() -> None:
    """The first create a plan sends (its write-ahead intent noted first): past the learning
    object's upsert, the assignment, else the completion; none when the plan creates nothing."""
    assert plan_sync(ASSIGNED, AccountSync()).first_create is SyncStep.CREATE_ASSIGNMENT
    assert plan_sync(DONE, AccountSync(content_known=True)).first_create is SyncStep.CREATE_ASSIGNMENT
    assert plan_sync(DONE, AccountSync(True, True)).first_create is SyncStep.CREATE_COMPLETION
    assert plan_sync(ASSIGNED, AccountSync(True, True, None)).first_create is None
    newer = replace(ASSIGNED, title="SQL Injection 2", title_at=datetime(2026, 6, 1, tzinfo=UTC))
    upsert_only = plan_sync(newer, AccountSync(True, True, None, "SQL Injection", datetime(2026, 5, 1, tzinfo=UTC)))
    assert upsert_only.steps == (SyncStep.UPSERT_CONTENT,)
    assert upsert_only.first_create is None


def test_the_same_title_at_a_later_time_needs_no_upsert() -> None:
    """A record whose title is the one upserted, carried by a later event (a training assigned again,
    a progress event), plans nothing, its later time only to be noted; another, newer text plans
    the upsert alone; an older one nothing."""
    at = ASSIGNED.assigned_at
    assert at is not None
    synced = AccountSync(True, True, content_title=ASSIGNED.title, content_title_at=at)
    later = replace(ASSIGNED, title_at=at + timedelta(days=365))
    assert not newer_title(later, synced)
    assert later_same_title(later, synced)
    assert plan_sync(later, synced).done
    renamed = replace(later, title="SQL Injection 2.0")
    assert not later_same_title(renamed, synced)
    assert plan_sync(renamed, synced).steps == (SyncStep.UPSERT_CONTENT,)
    assert plan_sync(replace(renamed, title_at=at - timedelta(days=1)), synced).done
    assert not later_same_title(replace(later, title_at=at), synced)


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


SENT = {
    "learning_object_external_reference": "exec:scenario:discovery-call",
    "result": {"value": "Pass"},
    "completed_at": "2026-06-06T09:00:00.250Z",
    "score": {"percentage": 85.4},
}


def _listed(**changes: object) -> dict[str, object]:
    return {**SENT, **changes}


@pytest.mark.parametrize(
    "row",
    [
        _listed(),
        _listed(completed_at="2026-06-06T09:00:00Z", score={"percentage": 85}),  # whole seconds and percents
        _listed(completed_at="2026-06-06"),  # the day only
        _listed(completed_at="2026-06-06T00:00:00.000Z"),  # the day only, as midnight
        _listed(completed_at="2026-06-06T11:00:00.250+02:00"),  # another offset, the same instant
        _listed(result={"value": "pass"}),
    ],
    ids=["exact", "whole-seconds-and-percents", "day", "midnight", "offset", "lower-case-result"],
)
def test_a_listed_completion_as_an_lms_keeps_it_is_the_one_sent(row: dict[str, object]) -> None:
    """The check after an uncertain create recognises its completion however the LMS rounds it (whole
    seconds, whole percents, the day only): were it missed, the completion would be written again."""
    assert same_completion(row, SENT)


@pytest.mark.parametrize(
    "row",
    [
        _listed(completed_at="2026-06-05T09:00:00.250Z"),  # an earlier retake's day
        _listed(completed_at="2026-06-05"),
        _listed(completed_at="2026-06-06T09:00:02Z"),
        _listed(score={"percentage": 84}),
        _listed(score=None),
        _listed(result={"value": "Fail"}),
        _listed(learning_object_external_reference="exec:scenario:renewal"),
        _listed(completed_at=None),
    ],
    ids=["other-day", "other-date", "seconds-apart", "lower-score", "no-score", "fail", "other-object", "no-time"],
)
def test_a_listed_completion_that_differs_is_not_the_one_sent(row: dict[str, object]) -> None:
    """An earlier completion (another day, another score or result) is never taken for the one sent."""
    assert not same_completion(row, SENT)
