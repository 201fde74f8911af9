"""The LMS pass's compact index of an account: what is missing in the LMS, and what the LMS holds
that lmsbridge has no record of."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from lmsbridge.domain.records import Completion
from lmsbridge.domain.sync import completion_body_of, iso
from lmsbridge.reconcile.lms_index import ASSIGNMENT, COMPLETION, AccountIndex, Missing

PEOPLE = {"ann@x.example": "usr_ann", "bob@x.example": "usr_bob"}
XSS, SQLI, OTHER = "limeplate:topic:xss", "limeplate:topic:sqli", "someone-elses:course"
REF = "learning_object_external_reference"


def test_a_written_step_the_lms_does_not_list_is_missing_and_nothing_else_is() -> None:
    """A record whose assignment and completion are written but only the assignment is listed lacks
    its completion; one fully listed lacks nothing; a record with nothing written is never missing."""
    index = AccountIndex(PEOPLE)
    index.hold(1, "ann@x.example", XSS, assignment=True, completion=True)
    index.hold(2, "bob@x.example", XSS, assignment=True, completion=True)
    index.hold(3, "bob@x.example", SQLI, assignment=False, completion=False)
    for kind, user in ((ASSIGNMENT, "usr_ann"), (ASSIGNMENT, "usr_bob"), (COMPLETION, "usr_bob")):
        index.listed(kind, user, XSS)
    assert list(index.missing()) == [Missing(1, assignment=False, completion=True)]
    assert (index.written, index.unknown_people, index.unknown_writes) == (2, 0, [])


def test_lms_rows_for_our_learning_objects_without_a_record_are_unknown_writes_once_each() -> None:
    """An LMS row for one of lmsbridge's learning objects is an unknown write when its person is not
    in the directory or holds no record of it; a row for anyone else's learning object is ignored; a
    row listed twice counts once; assignments come first, then by user."""
    index = AccountIndex(PEOPLE)
    index.hold(1, "ann@x.example", XSS, assignment=True, completion=False)
    index.hold(2, "ann@x.example", SQLI, assignment=True, completion=False)
    index.listed(COMPLETION, "usr_bob", XSS)
    index.listed(ASSIGNMENT, "usr_stranger", SQLI)
    index.listed(ASSIGNMENT, "usr_stranger", SQLI)
    index.listed(ASSIGNMENT, "usr_bob", XSS)
    index.listed(ASSIGNMENT, "usr_ann", OTHER)
    index.listed(ASSIGNMENT, "usr_ann", XSS)
    assert index.unknown_writes == [
        (ASSIGNMENT, "usr_bob", XSS),
        (ASSIGNMENT, "usr_stranger", SQLI),
        (COMPLETION, "usr_bob", XSS),
    ]
    assert list(index.missing()) == [Missing(2, assignment=True, completion=False)]


def test_two_records_of_one_pair_are_both_checked() -> None:
    """Two sources' records of one person and learning object on one account (one LMS assignment)
    are both missing when the LMS lacks it, and neither is when it lists it."""
    index = AccountIndex(PEOPLE)
    index.hold(1, "ann@x.example", XSS, assignment=True, completion=False)
    index.hold(7, "ann@x.example", XSS, assignment=True, completion=False)
    assert [m.record_id for m in index.missing()] == [1, 7]
    index.listed(ASSIGNMENT, "usr_ann", XSS)
    assert list(index.missing()) == []


def test_people_missing_from_the_directory_are_counted_when_written() -> None:
    """A written record whose person the directory does not know cannot be looked for in the LMS: it
    is counted as an unknown person, never reported missing; an unwritten one is not counted."""
    index = AccountIndex(PEOPLE)
    index.hold(1, "carol@x.example", XSS, assignment=True, completion=False)
    index.hold(2, "dave@x.example", XSS, assignment=False, completion=False)
    assert (index.written, index.unknown_people, list(index.missing())) == (1, 1, [])


def test_an_unreadable_row_makes_the_writes_it_may_be_unverified_not_missing() -> None:
    """A row without a reference blinds its person's writes of its kind, one without a user its
    learning object's, one without either every write of its kind; a stranger's row without a
    reference blinds nothing. Every such row is counted; writes they may be are unverified, the
    others still missing."""
    people = {**PEOPLE, "cy@x.example": "usr_cy"}
    index = AccountIndex(people)
    index.hold(1, "ann@x.example", XSS, assignment=True, completion=True)
    index.hold(2, "bob@x.example", SQLI, assignment=True, completion=True)
    index.hold(3, "cy@x.example", XSS, assignment=True, completion=False)
    index.listed(COMPLETION, "usr_ann", None)
    index.listed(ASSIGNMENT, None, SQLI)
    index.listed(ASSIGNMENT, "usr_stranger", None)
    assert list(index.missing()) == [
        Missing(1, assignment=True, completion=False),
        Missing(2, assignment=False, completion=True),
        Missing(3, assignment=True, completion=False),
    ]
    assert index.unverified() == 2
    assert index.unreadable == {ASSIGNMENT: 2, COMPLETION: 1}
    index.listed(COMPLETION, None, None)
    assert list(index.missing()) == [Missing(1, assignment=True, completion=False), Missing(3, True, False)]
    assert index.unverified() == 2


def test_a_completion_is_listed_only_by_a_row_that_is_the_one_written() -> None:
    """A completion counts as listed only when a row has the result, score and time lmsbridge wrote,
    as an LMS may keep them (the day only, whole percents): an older Fail of the pair does not stand
    for the Pass written since. A record that does not say which completion it wrote (before 0002)
    is listed by any completion of its pair; two records of one pair are judged each by its own."""
    at = datetime(2026, 5, 29, 8, 30, 15, 250_000, tzinfo=UTC)
    passed, failed = Completion(True, 95.4, at), Completion(False, 40.0, at - timedelta(days=2))
    fail_row = {"result": {"value": "Fail"}, "score": {"percentage": 40.0}, "completed_at": iso(at - timedelta(days=2))}
    coarse_pass = {"result": {"value": "Pass"}, "score": {"percentage": 95}, "completed_at": "2026-05-29T00:00:00Z"}
    index = AccountIndex(PEOPLE)
    index.hold(1, "ann@x.example", XSS, assignment=True, completion=True, written=passed)
    index.hold(2, "bob@x.example", XSS, assignment=True, completion=True, written=None)
    index.hold(3, "bob@x.example", SQLI, assignment=True, completion=True, written=passed)
    index.hold(4, "bob@x.example", SQLI, assignment=True, completion=True, written=failed)  # a second source
    for user, ref in (("usr_ann", XSS), ("usr_bob", XSS), ("usr_bob", SQLI)):
        index.listed(ASSIGNMENT, user, ref)
        index.listed(COMPLETION, user, ref, {**fail_row, REF: ref})
    assert [(m.record_id, m.completion) for m in index.missing()] == [(1, True), (3, True)]
    index.listed(COMPLETION, "usr_ann", XSS, {**coarse_pass, REF: XSS})
    assert [m.record_id for m in index.missing()] == [3]


@pytest.mark.parametrize(
    "written",
    [
        Completion(True, None, None),
        Completion(False, 0.0, datetime(1, 1, 1, tzinfo=UTC)),
        Completion(True, -12.345, datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),
        Completion(True, 100.0, datetime(2026, 5, 29, 8, 30, 15, 250_000, tzinfo=UTC)),
    ],
)
def test_a_written_completion_packs_into_the_index_and_back(written: Completion) -> None:
    """The completion a record wrote is kept packed in its int and compared as written: a row that
    is it lists it, whatever its score or time (none, year 1, year 9999, a negative score)."""
    body = completion_body_of(XSS, written)
    index = AccountIndex(PEOPLE)
    index.hold(2**40, "ann@x.example", XSS, assignment=False, completion=True, written=written)
    assert [m.record_id for m in index.missing()] == [2**40]
    index.listed(COMPLETION, "usr_ann", XSS, {**body, "score": {"percentage": 50.0}} if written.score is None else body)
    assert [m.record_id for m in index.missing()] == ([2**40] if written.score is None else [])
    index.listed(COMPLETION, "usr_ann", XSS, body)
    assert list(index.missing()) == []


def test_a_completion_whose_score_cannot_be_packed_is_listed_by_any_row_of_its_pair() -> None:
    """A score the index cannot keep exactly (not finite, or beyond 10**9 percent) is compared as a
    record from before 0002 is: any completion of the pair lists it."""
    index = AccountIndex(PEOPLE)
    index.hold(1, "ann@x.example", XSS, assignment=False, completion=True, written=Completion(True, math.nan, None))
    index.listed(COMPLETION, "usr_ann", XSS, {REF: XSS, "result": {"value": "Fail"}})
    assert list(index.missing()) == []
