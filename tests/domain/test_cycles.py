"""A training assigned again (a yearly one): each cycle's completion reaches the LMS, in any order.

A cycle is a platform assignment: its completions carry when it was created (``cycle_at``). The
same small model of one LMS account as tests/domain/test_retakes.py applies what
:func:`plan_sync` asks for.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmsbridge.domain import AccountSync, Completion, Rank, RecordState, SyncStep, merge, plan_sync
from lmsbridge.domain.records import completion_of, improves, new_cycle
from lmsbridge.domain.sync import replaces, superseded_ids

T0 = datetime(2025, 1, 6, 8, tzinfo=UTC)
NEXT_YEAR = T0 + timedelta(days=365)


def _done(cycle: datetime | None, passed: bool, score: float | None, days: int) -> RecordState:
    """A completion ``days`` after its cycle's assignment was created (``cycle``; None: unknown)."""
    return RecordState(
        rank=Rank.COMPLETED,
        learning_object_ref="ref",
        title="T",
        email="jane@acme.example",
        completed_at=(cycle or T0) + timedelta(days=days),
        passed=passed,
        score=score,
        progress=100.0,
        cycle_at=cycle,
    )


def _written(arrivals: list[RecordState], sync_after: list[bool]) -> list[Completion]:
    """Merge the arrivals in order, syncing where told and after the last; the completions written."""
    state: RecordState | None = None
    synced = AccountSync(content_known=True, assignment_created=True)
    written: list[Completion] = []
    flags = [*(sync_after + [False] * len(arrivals))[: len(arrivals) - 1], True]
    for arrival, sync_now in zip(arrivals, flags, strict=True):
        state = merge(state, arrival)
        if sync_now and SyncStep.CREATE_COMPLETION in plan_sync(state, synced).steps:
            completion = completion_of(state)
            assert completion is not None
            written.append(completion)
            # as the database keeps it: result, score and time (the cycle is not stored there)
            synced = AccountSync(True, True, Completion(completion.passed, completion.score, completion.completed_at))
    return written


results = st.tuples(st.booleans(), st.none() | st.sampled_from([40.0, 80.0, 95.0]), st.integers(1, 30))


@given(
    st.lists(results, min_size=1, max_size=4),
    st.lists(results, min_size=1, max_size=4),
    st.lists(st.booleans(), max_size=10),
    st.randoms(),
)
def test_the_new_cycle_completion_is_written_and_an_old_one_never_after_it(
    first: list[tuple[bool, float | None, int]],
    second: list[tuple[bool, float | None, int]],
    sync_after: list[bool],
    rnd: random.Random,
) -> None:
    """Two yearly cycles' completions (retakes in each), in any order and synced anywhere: the last
    written is the second cycle's best whatever the first's was (before: not written when no
    better), each one written improves on the one before or starts the new cycle, and no first-cycle
    completion is written after a second-cycle one."""
    items = [_done(T0, *r) for r in first] + [_done(NEXT_YEAR, *r) for r in second]
    arrivals = items + items[: len(items) // 2]
    rnd.shuffle(arrivals)
    written = _written(arrivals, sync_after)
    best = max(second, key=lambda r: (r[0], -1 if r[1] is None else r[1], -r[2]))
    assert (written[-1].passed, written[-1].score, written[-1].cycle_at) == (best[0], best[1], NEXT_YEAR)
    assert all(improves(later, earlier) for earlier, later in itertools.pairwise(written))
    cycles = [c.cycle_at for c in written]
    assert cycles == sorted(cycles)  # type: ignore[type-var]


def test_the_same_result_a_year_later_is_written_and_keeps_the_first() -> None:
    """A Pass at 80 % written last year; this year's assignment is passed at 80 % too: written
    (before: the same result and score was "not a retake"), and with deletion of superseded
    completions on, last year's is not deleted: it is the earlier cycle's, not a replaced one."""
    last_year = Completion(True, 80.0, T0 + timedelta(days=5))
    synced = AccountSync(True, True, last_year, lms_completion_id="cmp_1")
    this_year = _done(NEXT_YEAR, True, 80.0, 5)
    assert new_cycle(completion_of(this_year), last_year)  # type: ignore[arg-type]
    assert plan_sync(this_year, synced, delete_superseded=True).steps == (SyncStep.CREATE_COMPLETION,)


def test_a_new_cycle_deletes_only_the_noted_fail_never_last_years_completion() -> None:
    """Last year's retake Pass is written, its Fail noted as superseded but not yet deleted (deletion
    turned on later, or its delete failed); this year's completion is written. The deletion that
    goes with it deletes the noted Fail only: last year's Pass is the earlier cycle's, not replaced."""
    last_year = Completion(True, 85.0, T0 + timedelta(days=5))
    synced = AccountSync(True, True, last_year, lms_completion_id="cmp_pass", superseded_completion_id="cmp_fail")
    this_year = _done(NEXT_YEAR, True, 85.0, 5)
    assert plan_sync(this_year, synced, delete_superseded=True).steps == (
        SyncStep.CREATE_COMPLETION,
        SyncStep.DELETE_SUPERSEDED,
    )
    assert not replaces(this_year, synced)
    assert superseded_ids(synced, replacing=replaces(this_year, synced)) == ("cmp_fail",)
    retake = _done(T0, True, 95.0, 9)  # the same cycle's better retake does replace the Pass
    assert replaces(retake, synced)
    assert superseded_ids(synced, replacing=replaces(retake, synced)) == ("cmp_fail", "cmp_pass")


def test_a_late_retake_of_last_year_changes_nothing_once_this_year_is_in() -> None:
    """This year's Fail is the record's completion; last year's better retake arriving late does
    not displace it (and writes nothing), whichever came first."""
    this_year, late = _done(NEXT_YEAR, False, 40.0, 3), _done(T0, True, 95.0, 20)
    assert merge(merge(None, this_year), late) == merge(merge(None, late), this_year) == merge(None, this_year)
    assert _written([this_year, late], [True]) == [Completion(False, 40.0, this_year.completed_at, NEXT_YEAR)]


def test_an_assignment_created_before_the_completion_is_the_same_cycle() -> None:
    """Two overlapping assignments (a team's, then one of the person's own, both open when the
    person finished): their completions are one completion, written once."""
    team, own = _done(T0, True, 80.0, 40), _done(T0 + timedelta(days=20), True, 80.0, 20)
    assert team.completed_at == own.completed_at
    assert len(_written([team, own], [True])) == 1
    assert len(_written([own, team], [True])) == 1


def test_a_completion_dated_before_its_assignment_is_written_once() -> None:
    """A platform dating a completion before its own assignment's creation (clocks, bad data): it
    is written once, not taken for a new cycle of itself once written (and written for ever)."""
    odd = _done(NEXT_YEAR, True, 80.0, -3)
    assert len(_written([odd, odd, odd], [True, True])) == 1


OVERLAP_OPEN = (
    "known defect: merge orders completions by their assignment's creation first; the rule that would"
    " let the Pass win is not transitive (test_the_cycle_rule_between_two_completions_is_not_transitive),"
    " so no join keeping one completion per record follows it"
)


@pytest.mark.xfail(strict=True, reason=OVERLAP_OPEN)
def test_a_later_pass_of_the_same_cycle_is_written_after_a_fail() -> None:
    """Two open assignments of one training: a1 (January) and a2 (created June 1). a2's Fail of
    June 3 is written; then a1's Pass of June 10 arrives. a2 was created before either completion,
    so they are one cycle and the Pass improves on the Fail: it should be written. Known defect:
    merge keeps a2's Fail (the later-created assignment's) and the plan writes nothing."""
    program, manual = T0, T0 + timedelta(days=147)
    fail = _done(manual, False, 40.0, 2)
    passed = _done(program, True, 85.0, 156)
    assert fail.completed_at is not None
    assert passed.completed_at is not None
    assert fail.completed_at < passed.completed_at
    assert not new_cycle(completion_of(fail), completion_of(passed))  # type: ignore[arg-type]
    written = Completion(False, 40.0, fail.completed_at)
    synced = AccountSync(content_known=True, assignment_created=True, completion=written, lms_completion_id="cmp_1")
    state = merge(merge(None, fail), passed)
    assert completion_of(state) == Completion(True, 85.0, passed.completed_at, program)
    assert plan_sync(state, synced).steps == (SyncStep.CREATE_COMPLETION,)


def test_the_cycle_rule_between_two_completions_is_not_transitive() -> None:
    """Why merge keeps ordering completions by their assignment's creation first. The pairwise rule
    "a new cycle's completion wins, else the better result" goes round in a circle on three
    completions: a1's Pass at 90 % (January 10), a2's Fail (a2 created June 1, failed June 3) and
    a1's Pass at 85 % (June 10). The Fail is a new cycle of the first Pass, the second Pass is no
    new cycle of the Fail and better, the first Pass no new cycle of the second and better. A
    join that keeps one completion per record picks the greatest by a fixed order, so it cannot
    follow that rule: some arrival order would end on another completion than some other."""
    first = completion_of(_done(T0, True, 90.0, 4))
    fail = completion_of(_done(T0 + timedelta(days=146), False, 40.0, 2))
    second = completion_of(_done(T0, True, 85.0, 155))
    assert first is not None
    assert fail is not None
    assert second is not None

    def wins(a: Completion, b: Completion) -> bool:
        return new_cycle(a, b) or (not new_cycle(b, a) and improves(a, b))

    assert wins(fail, first)  # a new cycle
    assert wins(second, fail)  # the same cycle, a Pass
    assert wins(first, second)  # the same cycle, a higher score
