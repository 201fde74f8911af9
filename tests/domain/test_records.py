"""The record join: order and duplicates of a record's events never change where it ends."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress, Rank, RecordState, merge, state_from_event
from lmsbridge.domain.records import title_key

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)


def _event(kind: str, **person: object) -> AssignmentEvent:
    return AssignmentEvent(
        message_id="m",
        source="s",
        platform="exec",
        type=kind,
        occurred_at=T0 + timedelta(days=3),
        received_at=T0,
        correlation_id="c",
        assignment_id="a",
        learning_object=LearningObject(external_reference="exec:scenario:x", title="X"),
        assigned_at=T0,
        due_date=T0 + timedelta(days=14),
        people=(PersonProgress(email="Jane@Acme.example", **person),),
    )


states = st.builds(
    RecordState,
    rank=st.sampled_from(list(Rank)),
    learning_object_ref=st.just("ref"),
    title=st.sampled_from(["A", "B"]),
    email=st.just("jane@acme.example"),
    title_at=st.none() | st.sampled_from([T0, T0 + timedelta(hours=1)]),
    assigned_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    due_date=st.none() | st.datetimes(timezones=st.just(UTC)),
    progress=st.none() | st.floats(0, 100),
    completed_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    passed=st.none() | st.booleans(),
    score=st.none() | st.floats(0, 100),
    cycle_at=st.none() | st.sampled_from([T0 - timedelta(days=365), T0, T0 + timedelta(days=3)]),
)


@given(st.lists(states, min_size=1, max_size=6), st.randoms())
def test_merge_is_order_and_duplicate_insensitive(items: list[RecordState], rnd: random.Random) -> None:
    """Any permutation of a record's states, with duplicates, merges to the same state."""
    shuffled = items + items[: len(items) // 2]
    rnd.shuffle(shuffled)
    assert reduce(merge, shuffled, None) == reduce(merge, items, None)


@given(states, states, states)
def test_merge_is_a_join(a: RecordState, b: RecordState, c: RecordState) -> None:
    """merge is commutative, associative and idempotent on any states, their completions' cycles
    (``cycle_at``: when the platform assignment completed was created) included."""
    assert merge(merge(None, a), b) == merge(merge(None, b), a)
    assert merge(merge(merge(None, a), b), c) == merge(merge(None, a), merge(merge(None, b), c))
    once = merge(None, a)
    assert merge(once, a) == merge(once, once) == once


@given(st.lists(states, min_size=1, max_size=6))
def test_the_newest_title_wins(items: list[RecordState]) -> None:
    """The merged title is the one of the latest event (no time counts as oldest; text breaks ties)."""
    merged = reduce(merge, items, None)
    assert merged is not None
    newest = max(items, key=lambda s: title_key(s.title, s.title_at))
    assert (merged.title, merged.title_at) == (newest.title, newest.title_at)


@given(states, states)
def test_rank_never_goes_backwards(a: RecordState, b: RecordState) -> None:
    """A merged record ranks at least as high as each input."""
    merged = merge(a, b)
    assert merged.rank >= max(a.rank, b.rank)


def test_completed_event_completes_and_keeps_the_envelope_time() -> None:
    """An Exec completion (which has no completion time) is completed at the envelope's timestamp."""
    event = _event("assignment.completed", passed=False, score=41.0)
    state = state_from_event(event, event.people[0])
    assert (state.rank, state.passed, state.score, state.completed_at) == (
        Rank.COMPLETED,
        False,
        41.0,
        T0 + timedelta(days=3),
    )
    assert state.email == "jane@acme.example"


def test_late_created_after_completed_changes_nothing() -> None:
    """A created event arriving after the completion leaves the completed record as it was."""
    done = _event("assignment.completed", passed=True, score=90.0)
    created = _event("assignment.created", progress=0.0)
    completed_state = state_from_event(done, done.people[0])
    assert merge(completed_state, state_from_event(created, created.people[0])) == completed_state
