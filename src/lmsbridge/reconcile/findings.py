"""What a pass finds, and the pure rules deciding it: in step, or drift of which kind.

A platform's observation of one person is the :class:`~lmsbridge.domain.RecordState` the
same event would produce (:func:`~lmsbridge.domain.records.state_from_event`). It is in step
when merging it into the local record changes nothing the LMS is told (rank, progress,
result, score, title, dates); the time an event carried (the title's, an Exec completion's,
which is when lmsbridge first saw it) is not a difference. Otherwise it is drift:

- ``record_missing``: lmsbridge has no record of the person's assignment;
- ``completion_missing``: the platform says completed, lmsbridge does not;
- ``updated``: anything else the merge would raise (progress, a better score, a date, a new
  cycle's completion: a training assigned again and completed again). A completion's cycle
  alone is no difference: records stored before cycles were kept have none.

The message id of what a pass queues is derived from (source, assignment, observed state),
so a pass repeated, or racing the same event's webhook, stores nothing twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from lmsbridge.domain import AssignmentEvent, PersonProgress, Rank, RecordState, merge, state_from_event
from lmsbridge.domain.records import completion_of, new_cycle

RECORD_MISSING = "record_missing"
COMPLETION_MISSING = "completion_missing"
UPDATED = "updated"
LMS_ASSIGNMENT_MISSING = "lms_assignment_missing"
LMS_COMPLETION_MISSING = "lms_completion_missing"
LMS_UNKNOWN_WRITE = "lms_unknown_write"
DRIFT_KINDS = (RECORD_MISSING, COMPLETION_MISSING, UPDATED)


def _essence(state: RecordState) -> tuple[Any, ...]:
    return (
        state.rank,
        state.title,
        state.assigned_at,
        state.due_date,
        state.progress,
        state.passed if state.rank is Rank.COMPLETED else None,
        state.score,
    )


def drift(local: RecordState | None, observed: RecordState) -> str | None:
    """The kind of drift between the local record and an observation; None when in step."""
    if local is None:
        return RECORD_MISSING
    seen, held = completion_of(observed), completion_of(local)
    if _essence(merge(local, observed)) == _essence(local) and not (seen and held and new_cycle(seen, held)):
        return None
    if observed.rank is Rank.COMPLETED and local.rank is not Rank.COMPLETED:
        return COMPLETION_MISSING
    return UPDATED


def observed(event: AssignmentEvent, person: PersonProgress) -> RecordState:
    """The state an event reports for one person (the webhook path's own rule)."""
    return state_from_event(event, person)


def message_id(source: str, assignment_id: str, people: list[PersonProgress]) -> str:
    """A deterministic id per (source, assignment, observed state of the people queued)."""
    parts = [source, assignment_id]
    for p in sorted(people, key=lambda p: p.person_key):
        # "|started" only when begun: the ids of every state observed before it stay as they were.
        parts.append(f"{p.person_key}|{p.progress}|{p.passed}|{p.score}|{p.completed_at}" + "|started" * p.started)
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]
    return f"reconcile:{digest}"


@dataclass
class SourceReport:
    """The figures of one source's pass."""

    source: str
    platform: str
    assignments_read: int = 0
    records_read: int = 0
    in_step: int = 0
    drift: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DRIFT_KINDS, 0))
    events_queued: int = 0
    detail_calls: int = 0
    skipped_inactive: int = 0
    platform_calls: int = 0
    retries: int = 0
    pages: int = 0
    duration: float = 0.0
    finished: bool = False
    stopped_at: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON and the database."""
        return asdict(self)
