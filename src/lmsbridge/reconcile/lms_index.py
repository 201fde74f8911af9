"""What lmsbridge holds on one LMS account, compact enough for an organisation's millions of rows.

The LMS pass (:mod:`lmsbridge.reconcile.lms`) compares every (person, learning object) lmsbridge
holds on an account with the account's assignment and completion lists. Kept as tuples of
strings, both sides took about 1.1 KB a record (1,179 MiB for 1,000,000); here each pair is one int
(person index, learning-object index) mapping to one int (four bits, the record id and, above it,
the completion lmsbridge wrote packed into 95 bits), about 100 bytes a record, and the LMS's lists
are never kept: each row only sets a bit as it is read.

A completion is listed only when a row is the one lmsbridge wrote (:func:`~lmsbridge.domain.sync.lists_completion`:
the same result, score and time, as an LMS may keep them): after a retake, the old Fail still
listed is not the Pass written since.

Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lmsbridge.domain.records import Completion
from lmsbridge.domain.sync import lists_completion

ASSIGNMENT = "assignment"
COMPLETION = "completion"
_WRITTEN = {ASSIGNMENT: 1, COMPLETION: 2}  # lmsbridge recorded the write as done
_LISTED = {ASSIGNMENT: 4, COMPLETION: 8}  # the LMS listed it
_FLAGS = 4  # bits below the record id
_ID_BITS = 48  # the record id's; the written completion's fingerprint is above
_REF_BITS = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCORE_BITS, _SCORE_BIAS = 43, 2**41 + 1  # thousandths of a percent, |score| < 2**40 / 1000
_TIME_BIAS = 2**48 + 1  # milliseconds since 1970 (years 1 to 9999 are within 2**48)


@dataclass(frozen=True, slots=True)
class Missing:
    """A write lmsbridge recorded as done that the LMS does not list."""

    record_id: int
    assignment: bool
    completion: bool


class AccountIndex:
    """The (person, learning object) pairs lmsbridge holds on one account, and what the LMS listed.

    Fill it with :meth:`hold` (every sync row on the account, written or not), then feed it the
    LMS's rows with :meth:`listed`; :meth:`missing`, :meth:`unverified` and :attr:`unknown_writes`
    are the findings. ``people`` is the account's directory (e-mail -> StackOne user id).

    A row without its user id or its learning object reference (the spec lets both be null) is
    unreadable: skipped and counted (:attr:`unreadable`), but never evidence that a write is absent.
    A write not listed that such a row may be (the same person with no reference, our learning
    object with no user, or neither) is :meth:`unverified`, not missing: nothing licenses writing it again.
    """

    def __init__(self, people: Mapping[str, str]) -> None:
        self._by_email: dict[str, int] = {}
        self._by_user: dict[str, int] = {}
        for index, (email, user_id) in enumerate(people.items()):
            self._by_email[email] = index
            self._by_user[user_id] = index
        self._refs: dict[str, int] = {}
        self._pairs: dict[int, int] = {}  # pair -> (fingerprint << _ID_BITS | record id) << _FLAGS | bits
        self._more: dict[int, list[int]] = {}  # further records of a pair (two sources, one account)
        self._unknown: set[tuple[str, str, str]] = set()  # (kind, user id, learning object)
        # What unreadable rows may be, per kind: some people's writes, some objects', or any.
        self._blind_people: dict[str, set[int]] = {ASSIGNMENT: set(), COMPLETION: set()}
        self._blind_refs: dict[str, set[int]] = {ASSIGNMENT: set(), COMPLETION: set()}
        self._blind_all: dict[str, bool] = {ASSIGNMENT: False, COMPLETION: False}
        self.written = 0
        self.unknown_people = 0
        self.unreadable = {ASSIGNMENT: 0, COMPLETION: 0}  # rows skipped: no user id or no reference

    def hold(
        self,
        record_id: int,
        email: str,
        ref: str,
        *,
        assignment: bool,
        completion: bool,
        written: Completion | None = None,
    ) -> None:
        """Note one record with a sync row on the account, and which of its writes are done.

        ``written``: the completion recorded as written (None when unknown, as on a row from before
        revision 0002: then any completion of the pair counts).
        """
        assert 0 <= record_id < 1 << _ID_BITS
        ref_index = self._refs.setdefault(ref, len(self._refs))
        done = assignment or completion
        self.written += done
        person = self._by_email.get(email)
        if person is None:  # not in the directory: no user id to find it by in the LMS
            self.unknown_people += done
            return
        pair = person << _REF_BITS | ref_index
        mark = _fingerprint(written) if completion else 0
        value = (mark << _ID_BITS | record_id) << _FLAGS
        value |= (_WRITTEN[ASSIGNMENT] * assignment) | (_WRITTEN[COMPLETION] * completion)
        if pair in self._pairs:
            self._more.setdefault(pair, []).append(value)
        else:
            self._pairs[pair] = value

    def listed(self, kind: str, user_id: str | None, ref: str | None, row: dict[str, Any] | None = None) -> None:
        """Note one row of the LMS's ``kind`` list (assignment or completion); either may be missing.

        ``row`` (a completion's): matched against the completion each record of the pair wrote.
        """
        if not user_id or not ref:
            self._unreadable(kind, user_id, ref)
            return
        ref_index = self._refs.get(ref)
        if ref_index is None:  # not one of lmsbridge's learning objects: not ours to judge
            return
        person = self._by_user.get(user_id)
        pair = -1 if person is None else person << _REF_BITS | ref_index
        value = self._pairs.get(pair)
        if value is None:
            self._unknown.add((kind, user_id, ref))
            return
        self._pairs[pair] = self._listed(kind, value, ref, row)
        more = self._more.get(pair)
        if more is not None:
            more[:] = [self._listed(kind, v, ref, row) for v in more]

    @staticmethod
    def _listed(kind: str, value: int, ref: str, row: dict[str, Any] | None) -> int:
        """``value`` with ``kind`` listed, if the row is its write (any assignment of the pair is)."""
        if kind == COMPLETION and row is not None and not value & _LISTED[COMPLETION]:
            written = _unpack(value >> (_FLAGS + _ID_BITS))
            if written is not None and not lists_completion(row, ref, written):
                return value
        return value | _LISTED[kind]

    def _unreadable(self, kind: str, user_id: str | None, ref: str | None) -> None:
        self.unreadable[kind] += 1
        if user_id:
            person = self._by_user.get(user_id)
            if person is not None:  # a stranger's row is none of ours, whatever its learning object
                self._blind_people[kind].add(person)
        elif ref:
            ref_index = self._refs.get(ref)
            if ref_index is not None:  # someone's row of one of our learning objects
                self._blind_refs[kind].add(ref_index)
        else:
            self._blind_all[kind] = True

    def missing(self) -> Iterator[Missing]:
        """Each record with a write recorded as done whose pair the LMS did not list, and no
        unreadable row may be, in the order held."""
        for pair, value in self._absent():
            lost_assignment, lost_completion, _ = self._judge(pair, value)
            if lost_assignment or lost_completion:
                yield Missing((value >> _FLAGS) & ((1 << _ID_BITS) - 1), lost_assignment, lost_completion)

    def unverified(self) -> int:
        """Records with a write recorded as done that the LMS did not list, but an unreadable row may be."""
        if not any(self.unreadable.values()):
            return 0
        return sum(self._judge(pair, value)[2] for pair, value in self._absent())

    def _absent(self) -> Iterator[tuple[int, int]]:
        """(pair, value) of every record held with a write done the LMS did not list, in the order held."""
        for pair, value in self._pairs.items():
            if _unlisted(value):
                yield pair, value
        for pair, values in self._more.items():
            for value in values:
                if _unlisted(value):
                    yield pair, value

    def _judge(self, pair: int, value: int) -> tuple[bool, bool, bool]:
        """(assignment missing, completion missing, some write unverified) of one held record."""
        person, ref_index = pair >> _REF_BITS, pair & ((1 << _REF_BITS) - 1)
        out = []
        unsure = False
        for kind in (ASSIGNMENT, COMPLETION):
            absent = bool(value & _WRITTEN[kind]) and not value & _LISTED[kind]
            blind = absent and (
                self._blind_all[kind] or person in self._blind_people[kind] or ref_index in self._blind_refs[kind]
            )
            out.append(absent and not blind)
            unsure = unsure or blind
        return out[0], out[1], unsure

    @property
    def unknown_writes(self) -> list[tuple[str, str, str]]:
        """(kind, user id, learning object) of each LMS row for one of lmsbridge's learning objects
        that lmsbridge holds no record of: assignments first, then by user and learning object."""
        return sorted(self._unknown, key=lambda u: (u[0] != ASSIGNMENT, u[1], u[2]))


def _fingerprint(written: Completion | None) -> int:
    """The completion written, packed into one int (0: nothing to compare a row with)."""
    if written is None:
        return 0
    score = 0
    if written.score is not None:
        if not math.isfinite(written.score) or abs(written.score) >= 2**40 / 1000:
            return 0
        score = round(written.score * 1000) + _SCORE_BIAS
    at = 0
    if written.completed_at is not None:
        when = written.completed_at if written.completed_at.tzinfo else written.completed_at.replace(tzinfo=UTC)
        at = (when - _EPOCH) // timedelta(milliseconds=1) + _TIME_BIAS
    return ((at << _SCORE_BITS | score) << 1 | written.passed) << 1 | 1


def _unpack(mark: int) -> Completion | None:
    """The completion :func:`_fingerprint` packed (times to the millisecond, scores to 0.001)."""
    if not mark & 1:
        return None
    passed, rest = bool(mark >> 1 & 1), mark >> 2
    score, at = rest & ((1 << _SCORE_BITS) - 1), rest >> _SCORE_BITS
    return Completion(
        passed,
        (score - _SCORE_BIAS) / 1000 if score else None,
        _EPOCH + timedelta(milliseconds=at - _TIME_BIAS) if at else None,
    )


def _unlisted(value: int) -> bool:
    """True when a write the value records as done is not listed (its written bit without its listed bit)."""
    return bool(value & ~(value >> 2) & 3)
