"""Retakes and renamed trainings: what the sync rules write again, in any order of arrival.

A small model of one LMS account stands in for StackOne here (the pipeline tests use the real
stand-in): it applies exactly the writes :func:`plan_sync` asks for.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from lmsbridge.domain import AccountSync, Completion, Rank, RecordState, SyncStep, merge, plan_sync
from lmsbridge.domain.records import completion_of, improves, title_key
from lmsbridge.domain.sync import later_same_title

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)


def _done(passed: bool, score: float | None, days: int) -> RecordState:
    return RecordState(
        rank=Rank.COMPLETED,
        learning_object_ref="ref",
        title="T",
        email="jane@acme.example",
        completed_at=T0 + timedelta(days=days),
        passed=passed,
        score=score,
        progress=100.0,
    )


completions = st.builds(_done, st.booleans(), st.none() | st.sampled_from([40.0, 60.0, 80.0, 95.0]), st.integers(0, 30))
titled = st.builds(
    lambda title, hours, rank: RecordState(
        rank=rank,
        learning_object_ref="ref",
        title=title,
        email="jane@acme.example",
        title_at=None if hours is None else T0 + timedelta(hours=hours),
    ),
    st.sampled_from(["Phishing", "Phishing 101", "Phishing (2026)"]),
    st.none() | st.integers(0, 48),
    st.sampled_from([Rank.ASSIGNED, Rank.IN_PROGRESS]),
)


def _sync_completions(arrivals: list[RecordState], sync_after: list[bool]) -> list[Completion]:
    """Merge the arrivals in order, syncing where told and at the end; the completions written."""
    state: RecordState | None = None
    synced = AccountSync(content_known=True, assignment_created=True)
    written: list[Completion] = []
    padded = sync_after[: len(arrivals) - 1] + [True] * len(arrivals)  # always synced after the last
    for arrival, sync_now in zip(arrivals, padded, strict=False):
        state = merge(state, arrival)
        if not sync_now:
            continue
        if SyncStep.CREATE_COMPLETION in plan_sync(state, synced).steps:
            completion = completion_of(state)
            assert completion is not None
            written.append(completion)
            synced = AccountSync(True, True, completion)
    assert state is not None
    assert plan_sync(state, synced).done
    return written


@given(st.lists(completions, min_size=1, max_size=6), st.lists(st.booleans(), max_size=12), st.randoms())
def test_each_completion_written_improves_and_the_best_is_written_last(
    items: list[RecordState], sync_after: list[bool], rnd: random.Random
) -> None:
    """In any order, with duplicates and syncs anywhere: every completion written is better than the one
    before (so no Fail after a Pass, no lower score), and the last one is the best result that arrived
    (the same result and score at another time is not written again)."""
    arrivals = items + items[: len(items) // 2]
    rnd.shuffle(arrivals)
    written = _sync_completions(arrivals, sync_after)
    assert written
    assert all(improves(later, earlier) for earlier, later in itertools.pairwise(written))
    best = completion_of(reduce(merge, items, None))  # type: ignore[arg-type]
    assert best is not None
    # the best result and score; its time is the first written of that result and score
    assert (written[-1].passed, written[-1].score) == (best.passed, best.score)


def test_fail_then_pass_writes_the_retake_and_pass_then_fail_writes_nothing() -> None:
    """A Pass after a written Fail is written with its own time and score; a Fail after a Pass is not."""
    fail, retake = _done(False, 40.0, 1), _done(True, 80.0, 5)
    assert _sync_completions([fail, retake], [True]) == [
        Completion(False, 40.0, fail.completed_at),
        Completion(True, 80.0, retake.completed_at),
    ]
    assert _sync_completions([retake, fail], [True]) == [Completion(True, 80.0, retake.completed_at)]


def test_same_result_counts_only_a_higher_score() -> None:
    """Same result: a higher score is a retake; the same score at another time, or a lower one, is not."""
    assert improves(Completion(False, 60.0, None), Completion(False, 40.0, None))
    assert improves(Completion(True, 50.0, None), Completion(True, None, None))
    assert not improves(Completion(True, 80.0, T0), Completion(True, 80.0, T0 + timedelta(days=1)))
    assert not improves(Completion(False, 99.0, None), Completion(True, 10.0, None))


def test_a_retake_supersedes_the_written_completion_only_when_deletion_is_on() -> None:
    """With deletion on, the replaced completion's LMS id is deleted after the retake is written."""
    synced = AccountSync(True, True, Completion(False, 40.0, T0), lms_completion_id="cmp_1")
    retake = _done(True, 80.0, 5)
    assert plan_sync(retake, synced).steps == (SyncStep.CREATE_COMPLETION,)
    assert plan_sync(retake, synced, delete_superseded=True).steps == (
        SyncStep.CREATE_COMPLETION,
        SyncStep.DELETE_SUPERSEDED,
    )
    pending = AccountSync(True, True, Completion(True, 80.0, T0), superseded_completion_id="cmp_1")
    assert plan_sync(retake, pending, delete_superseded=True).steps == (SyncStep.DELETE_SUPERSEDED,)


@given(st.lists(st.lists(titled, min_size=1, max_size=4), min_size=1, max_size=4), st.randoms())
def test_the_newest_title_ends_in_the_lms_whatever_the_order(
    records: list[list[RecordState]], rnd: random.Random
) -> None:
    """Several people's records of one training, each seeing some of its events in any order and synced
    at any point: the LMS ends with the title of the latest event, and never goes back to an older one."""
    content: tuple[str, datetime | None] | None = None
    lms_titles: list[tuple[str, datetime | None]] = []
    states: list[RecordState | None] = [None] * len(records)
    arrivals = [(i, s) for i, items in enumerate(records) for s in items]
    rnd.shuffle(arrivals)
    for i, arrival in arrivals + [(i, s) for i, items in enumerate(records) for s in items[:1]]:
        state = merge(states[i], arrival)
        states[i] = state
        synced = AccountSync(
            content_known=content is not None,
            assignment_created=content is not None,
            content_title=content[0] if content else None,
            content_title_at=content[1] if content else None,
        )
        if SyncStep.UPSERT_CONTENT in plan_sync(state, synced).steps:
            # the service writes only another title, and remembers the newest (title, time)
            if content is None or state.title != content[0]:
                lms_titles.append((state.title, state.title_at))
            content = (state.title, state.title_at)
        elif later_same_title(state, synced):  # nothing written: the sync notes the title's later time
            content = (state.title, state.title_at)
    newest = max((s for items in records for s in items), key=lambda s: title_key(s.title, s.title_at))
    assert lms_titles[-1][0] == newest.title
    keys = [title_key(*t) for t in lms_titles]
    assert keys == sorted(set(keys))  # each upsert newer than the last: never an older title again
    assert all(a[0] != b[0] for a, b in itertools.pairwise(lms_titles))  # a title is never sent twice in a row
