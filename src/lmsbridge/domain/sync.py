"""Sync rules: what must be written to an LMS account for a record, and in what shape.

StackOne has no update for assignments and completions and no idempotency key, so the
rules are written as "what is still missing": at most one assignment per (account, person,
learning object), learning object first, and a completion whenever the record's completion
:func:`~lmsbridge.domain.records.improves` on the one written there (a retake: a Pass after a
Fail is a new completion with its own time and score; the Fail is kept as history unless
``delete_superseded``; a new cycle's completion is written and the earlier cycle's always
kept). The learning object is upserted again when the record carries a newer title than the
one written (:func:`~lmsbridge.domain.records.title_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import Enum
from typing import Any

from lmsbridge.domain.records import Completion, Rank, RecordState, completion_of, improves, new_cycle, title_key


class SyncStep(Enum):
    """One write towards the LMS, in the order they must happen."""

    UPSERT_CONTENT = "upsert_content"
    CREATE_ASSIGNMENT = "create_assignment"
    CREATE_COMPLETION = "create_completion"
    DELETE_SUPERSEDED = "delete_superseded"


@dataclass(frozen=True, slots=True)
class AccountSync:
    """What is already written to one account for one record."""

    content_known: bool = False
    assignment_created: bool = False
    completion: Completion | None = None  # the best completion written (None: none yet)
    content_title: str | None = None  # the learning object's title as last upserted
    content_title_at: datetime | None = None
    lms_completion_id: str | None = None  # the LMS id of ``completion`` ('' or None: not known)
    superseded_completion_id: str | None = None  # a completion a retake replaced, not yet deleted

    @property
    def completion_created(self) -> bool:
        """True when some completion is written."""
        return self.completion is not None


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """The writes still missing, in order; empty when the account is up to date."""

    steps: tuple[SyncStep, ...]

    @property
    def done(self) -> bool:
        """True when nothing is left to write."""
        return not self.steps

    @property
    def first_create(self) -> SyncStep | None:
        """The first create the plan sends (the one whose write-ahead intent comes first), if any."""
        return next((s for s in self.steps if s in (SyncStep.CREATE_ASSIGNMENT, SyncStep.CREATE_COMPLETION)), None)


def plan_sync(state: RecordState, synced: AccountSync, *, delete_superseded: bool = False) -> SyncPlan:
    """Decide the writes still missing for ``state`` on one account.

    ``delete_superseded``: also delete a completion a retake replaced (when its LMS id is known).
    """
    steps: list[SyncStep] = []
    needs_assignment = not synced.assignment_created
    needs_completion = needs_completion_write(state, synced)
    if ((needs_assignment or needs_completion) and not synced.content_known) or newer_title(state, synced):
        steps.append(SyncStep.UPSERT_CONTENT)
    if needs_assignment:
        steps.append(SyncStep.CREATE_ASSIGNMENT)
    if needs_completion:
        steps.append(SyncStep.CREATE_COMPLETION)
    if delete_superseded and superseded_ids(synced, replacing=needs_completion and not _adds_a_cycle(state, synced)):
        steps.append(SyncStep.DELETE_SUPERSEDED)
    return SyncPlan(tuple(steps))


def needs_completion_write(state: RecordState, synced: AccountSync) -> bool:
    """True when the record's completion is still to be written on the account: none is, or the
    record's :func:`~lmsbridge.domain.records.improves` on the one written."""
    completion = completion_of(state)
    return completion is not None and (synced.completion is None or improves(completion, synced.completion))


def replaces(state: RecordState, synced: AccountSync) -> bool:
    """True when writing the record's completion replaces the one written on the account (a retake):
    it is to be written and is not a :func:`~lmsbridge.domain.records.new_cycle` of it. A new
    cycle's completion adds to the written one, which stays the earlier cycle's: never superseded."""
    return needs_completion_write(state, synced) and not _adds_a_cycle(state, synced)


def _adds_a_cycle(state: RecordState, synced: AccountSync) -> bool:
    """True when the record's completion is a :func:`~lmsbridge.domain.records.new_cycle` of the written one."""
    completion = completion_of(state)
    return completion is not None and synced.completion is not None and new_cycle(completion, synced.completion)


def superseded_ids(synced: AccountSync, *, replacing: bool) -> tuple[str, ...]:
    """LMS ids of completions a retake replaced: the one noted, and the written one if ``replacing`` it."""
    ids = [synced.superseded_completion_id]
    if replacing and synced.completion is not None:
        ids.append(synced.lms_completion_id)
    return tuple(i for i in ids if i)


def newer_title(state: RecordState, synced: AccountSync) -> bool:
    """True when the record's title is another text, newer than the one upserted on the account.
    The same text at a later time needs no write (a training assigned again, a progress event):
    :func:`later_same_title`."""
    if not synced.content_known or synced.content_title is None or state.title == synced.content_title:
        return False
    return title_key(state.title, state.title_at) > title_key(synced.content_title, synced.content_title_at)


def later_same_title(state: RecordState, synced: AccountSync) -> bool:
    """True when the record carries the title upserted on the account, at a later time: nothing is
    written, but the later time is to be noted, or an older title arriving after it (a rename since
    undone, on another person's record) would be taken for newer and sent."""
    if not synced.content_known or synced.content_title is None or state.title != synced.content_title:
        return False
    return title_key(state.title, state.title_at) > title_key(synced.content_title, synced.content_title_at)


def same_completion(row: dict[str, Any], body: dict[str, Any]) -> bool:
    """True when a listed completion ``row`` is the one ``body`` creates: the same object and result,
    and the same score and time as an LMS may keep them (:data:`SCORE_ROUNDING`,
    :data:`TIME_ROUNDING`, or only the date). Too strict a match would write a completion again
    whenever an uncertain create is checked on such an LMS."""
    passed = str(body["result"]["value"]).lower() == "pass"
    score = body["score"]["percentage"] if "score" in body else None
    wanted = Completion(passed, score, _instant(body.get("completed_at")))
    return lists_completion(row, body["learning_object_external_reference"], wanted)


def lists_completion(row: dict[str, Any], ref: str, completion: Completion) -> bool:
    """True when a listed completion ``row`` is ``completion`` of learning object ``ref`` as it was
    sent (:func:`completion_body_of`: its time to the millisecond), by :func:`same_completion`'s rules;
    without building the body (the LMS pass compares every completion an account lists)."""
    if row.get("learning_object_external_reference") != ref:
        return False
    result = row.get("result")
    listed_result = result.get("value") if isinstance(result, dict) else None
    if not isinstance(listed_result, str) or listed_result.lower() != ("pass" if completion.passed else "fail"):
        return False
    score = row.get("score")
    listed_score = score.get("percentage") if isinstance(score, dict) else None
    if not _same_score(listed_score, completion.score):
        return False
    return _same_time(_instant(row.get("completed_at")), _sent(completion.completed_at))


def _sent(at: datetime | None) -> datetime | None:
    """``at`` as :func:`iso` sends it: aware, to the millisecond."""
    if at is None:
        return None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


SCORE_ROUNDING = 0.5
"""A listed score this close to the one sent is that one (an LMS keeping whole percents)."""
TIME_ROUNDING = timedelta(seconds=1)
"""A listed time this close to the one sent is that one (an LMS keeping whole seconds)."""


def _same_score(listed: Any, wanted: float | None) -> bool:
    if listed is None or wanted is None:
        return listed is None and wanted is None
    if isinstance(listed, bool) or not isinstance(listed, int | float | str):
        return False
    try:
        return abs(float(listed) - wanted) <= SCORE_ROUNDING
    except ValueError:
        return False


def _same_time(listed: datetime | None, wanted: datetime | None) -> bool:
    if listed is None or wanted is None:
        return listed is None and wanted is None
    if abs(listed - wanted) < TIME_ROUNDING:
        return True
    # An LMS keeping only the date lists midnight (UTC) of the day it was completed.
    listed = listed.astimezone(UTC)
    return listed.time() == time(0) and listed.date() == wanted.astimezone(UTC).date()


def _instant(value: Any) -> datetime | None:
    """An RFC 3339 text as an aware instant (None when absent or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as StackOne's examples write it."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assignment_status(state: RecordState) -> str:
    """StackOne's assignment ``status.value`` for a record's create.

    An assignment "can be pending or in progress" (StackOne's Create User Assignment page), so a
    record already completed when its assignment is first written (its completion came first, or
    a team member was at 100 % when the assignment was expanded) is created ``in_progress`` with
    its progress (100): the completion written next is what says it is done, as it is for an
    assignment written ``pending`` before its completion came (assignments are never updated).
    """
    return "pending" if state.rank is Rank.ASSIGNED else "in_progress"


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
    completion = Completion(state.passed is not False, state.score, state.completed_at)
    return completion_body_of(state.learning_object_ref, completion)


def completion_body_of(ref: str, completion: Completion) -> dict[str, Any]:
    """The Create User Completion body of ``completion`` for learning object ``ref``: what is sent
    for it, and what a listed row is compared with (:func:`same_completion`)."""
    body: dict[str, Any] = {
        "learning_object_external_reference": ref,
        "result": {"value": "Pass" if completion.passed else "Fail"},
    }
    if completion.completed_at is not None:
        body["completed_at"] = iso(completion.completed_at)
    if completion.score is not None:
        body["score"] = {"percentage": completion.score}
    return body


def content_body(external_reference: str, title: str) -> dict[str, Any]:
    """The full content upsert item (the upsert is not partial, so every field we own is sent)."""
    return {"external_reference": external_reference, "title": title, "active": True}


REOPENED = "reopened"
"""The write-ahead intent of a row a reconcile pass reopened (a write it recorded looked missing in
the LMS): EVERY create of the row lists the LMS first, as after a create whose outcome is unknown,
until the plan's last write is recorded. A row absent from a listing may be a gap in the listing
(a window, a row it could not read), so a reopen licenses a check, never a blind create."""

# Sync status of a (record, account) row.
PENDING = "pending"
SYNCED = "synced"
PARKED = "parked"
DEAD = "dead"
