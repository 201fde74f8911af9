"""Canonical per-person records and the join that makes event order irrelevant.

A record is identified by (source, learning object, person): the LMS keeps one assignment
and at most one completion per person and learning object, so two platform assignments of
the same training to the same person are one record. Every event contributes a
:class:`RecordState`; :func:`merge` is a join (commutative, associative, idempotent), so
any interleaving and any number of duplicates of a record's events end in the same state,
and a record's rank never goes backwards.

Two orders decide what the LMS is told again after a first write:

- :func:`improves`: a completion is worth writing as a retake only when its result is better
  than the one written: a Pass over a Fail, or the same result with a higher score (a score
  over none). The same result and score at another time is not a retake. The merged
  completion only ever rises in this order, so a Fail after a Pass never writes anything.
  A completion of a new cycle (:func:`new_cycle`: a platform assignment created after the
  written completion, as a yearly training is assigned again) is written whatever its result:
  completions are ordered by their assignment's creation first, so the newest cycle's best
  completion is the record's, and an older cycle's late event never displaces it.
  Known limit: two assignments open at once (one created before the other was completed) are one
  cycle by :func:`new_cycle`, yet a completion of the later-created one outranks the other's
  whatever its result. "A new cycle wins, else the better result" is not transitive (three
  completions can beat each other in a circle), and a join that keeps one completion per record
  can only take the greatest by a fixed order, so merge cannot follow it without keeping more
  than one completion per record.
- :func:`title_key`: the newest title wins, by the time of the event that carried it (ties
  broken by the text, so the choice never depends on order of arrival).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum

from lmsbridge.domain.events import ASSIGNMENT_COMPLETED, AssignmentEvent, PersonProgress


class Rank(IntEnum):
    """How far a person has got; only ever rises."""

    ASSIGNED = 1
    IN_PROGRESS = 2
    COMPLETED = 3


@dataclass(frozen=True, slots=True)
class RecordKey:
    """Identity of a canonical record."""

    source: str
    learning_object_ref: str
    person_key: str


@dataclass(frozen=True, slots=True)
class RecordState:
    """What lmsbridge believes about one person's assignment."""

    rank: Rank
    learning_object_ref: str
    title: str
    email: str
    title_at: datetime | None = None  # when the event that carried ``title`` happened
    assigned_at: datetime | None = None
    due_date: datetime | None = None
    progress: float | None = None
    completed_at: datetime | None = None
    passed: bool | None = None
    score: float | None = None
    cycle_at: datetime | None = None  # creation of the platform assignment the completion is for


@dataclass(frozen=True, slots=True)
class Completion:
    """One completion as written to (or meant for) the LMS: its result, score and time, and when
    the platform assignment it completes was created (``cycle_at``; None when unknown)."""

    passed: bool
    score: float | None
    completed_at: datetime | None
    cycle_at: datetime | None = None


def completion_of(state: RecordState) -> Completion | None:
    """The completion a record reports (None before it is completed); no result counts as a Pass."""
    if state.rank is not Rank.COMPLETED:
        return None
    return Completion(state.passed is not False, state.score, state.completed_at, state.cycle_at)


def _result_key(c: Completion) -> tuple[int, float]:
    return (1 if c.passed else 0, c.score if c.score is not None else float("-inf"))


def improves(new: Completion, written: Completion) -> bool:
    """True when ``new`` is worth writing after ``written``: a better result (Pass over Fail, else a
    higher score), or the completion of a :func:`new_cycle`."""
    return _result_key(new) > _result_key(written) or new_cycle(new, written)


def new_cycle(new: Completion, written: Completion) -> bool:
    """True when ``new`` completes a platform assignment created after ``written`` was completed:
    the training assigned again (a yearly one), not a retake of the same assignment. The written
    completion stays in the LMS as the earlier cycle's, never deleted as superseded. ``new`` must
    also be later than ``written``: a platform dating a completion before its assignment's
    creation would otherwise be a new cycle of itself once written, and written for ever."""
    if new.cycle_at is None or new.completed_at is None or written.completed_at is None:
        return False
    return new.cycle_at > written.completed_at and new.completed_at > written.completed_at


def title_key(title: str, at: datetime | None) -> tuple[float, str]:
    """Order of titles: the later event's title is newer; no time is oldest; text breaks ties."""
    return (at.timestamp() if at is not None else float("-inf"), title)


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _max_dt(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _completion_key(state: RecordState) -> tuple[float, int, float, float, int, int]:
    # The newest cycle's completion wins (its assignment created last; unknown counts oldest),
    # then the best: a pass over a fail (no result counts as a pass, as it is written), then the
    # higher score, then the earlier time; the last two fields break the remaining ties so the
    # choice never depends on order. Its second and third fields are improves'.
    completed = state.completed_at.timestamp() if state.completed_at else float("inf")
    return (
        state.cycle_at.timestamp() if state.cycle_at else float("-inf"),
        1 if state.passed is not False else 0,
        state.score if state.score is not None else float("-inf"),
        -completed,
        state.passed is None,
        state.score is None,
    )


def merge(current: RecordState | None, incoming: RecordState) -> RecordState:
    """Join two states of the same record; the result never ranks below either."""
    if current is None:
        return _normal(incoming)
    newest = max(current, incoming, key=lambda s: title_key(s.title, s.title_at))
    merged = replace(
        current,
        rank=max(current.rank, incoming.rank),
        learning_object_ref=min(current.learning_object_ref, incoming.learning_object_ref),
        title=newest.title,
        title_at=newest.title_at,
        assigned_at=_min(current.assigned_at, incoming.assigned_at),
        due_date=_max_dt(current.due_date, incoming.due_date),
        progress=_max_opt(current.progress, incoming.progress),
    )
    done = [s for s in (current, incoming) if s.rank is Rank.COMPLETED]
    if done:
        best = max(done, key=_completion_key)
        merged = replace(
            merged, completed_at=best.completed_at, passed=best.passed, score=best.score, cycle_at=best.cycle_at
        )
    return _normal(merged)


def _normal(state: RecordState) -> RecordState:
    """Completion fields exist only on completed records, whose progress is 100."""
    if state.rank is Rank.COMPLETED:
        return replace(state, progress=100.0)
    return replace(state, completed_at=None, passed=None, score=None, cycle_at=None)


def state_from_event(event: AssignmentEvent, person: PersonProgress) -> RecordState:
    """The state one event reports for one person."""
    completed = event.type == ASSIGNMENT_COMPLETED or (person.progress is not None and person.progress >= 100)
    if completed:
        rank = Rank.COMPLETED
    elif person.progress or person.started:
        rank = Rank.IN_PROGRESS
    else:
        rank = Rank.ASSIGNED
    completed_at = person.completed_at or (event.occurred_at if completed else None)
    return RecordState(
        rank=rank,
        learning_object_ref=event.learning_object.external_reference,
        title=event.learning_object.title,
        email=person.person_key,
        title_at=event.occurred_at,
        assigned_at=event.assigned_at,
        due_date=event.due_date,
        progress=person.progress if not completed else 100.0,
        completed_at=completed_at if completed else None,
        passed=(person.passed if person.passed is not None else True) if completed else None,
        score=person.score if completed else None,
        cycle_at=event.assigned_at if completed else None,
    )
