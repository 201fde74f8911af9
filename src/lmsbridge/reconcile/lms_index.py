"""What lmsbridge holds on one LMS account, compact enough for an organisation's millions of rows.

The LMS pass (:mod:`lmsbridge.reconcile.lms`) compares every (person, learning object) lmsbridge
holds on an account with the account's assignment and completion lists. Kept as tuples of
strings, both sides took about 1.1 KB a record (1,179 MiB for 1,000,000); here each pair is one int
(person index, learning-object index) mapping to one int (record id and four bits), about 100
bytes a record, and the LMS's lists are never kept: each row only sets a bit as it is read.

Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

ASSIGNMENT = "assignment"
COMPLETION = "completion"
_WRITTEN = {ASSIGNMENT: 1, COMPLETION: 2}  # lmsbridge recorded the write as done
_LISTED = {ASSIGNMENT: 4, COMPLETION: 8}  # the LMS listed it
_FLAGS = 4  # bits below the record id
_REF_BITS = 32


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
        self._pairs: dict[int, int] = {}  # pair -> record id << _FLAGS | bits
        self._more: list[tuple[int, int]] = []  # a second record of a pair (two sources, one account)
        self._unknown: set[tuple[str, str, str]] = set()  # (kind, user id, learning object)
        # What unreadable rows may be, per kind: some people's writes, some objects', or any.
        self._blind_people: dict[str, set[int]] = {ASSIGNMENT: set(), COMPLETION: set()}
        self._blind_refs: dict[str, set[int]] = {ASSIGNMENT: set(), COMPLETION: set()}
        self._blind_all: dict[str, bool] = {ASSIGNMENT: False, COMPLETION: False}
        self.written = 0
        self.unknown_people = 0
        self.unreadable = {ASSIGNMENT: 0, COMPLETION: 0}  # rows skipped: no user id or no reference

    def hold(self, record_id: int, email: str, ref: str, *, assignment: bool, completion: bool) -> None:
        """Note one record with a sync row on the account, and which of its writes are done."""
        ref_index = self._refs.setdefault(ref, len(self._refs))
        written = assignment or completion
        self.written += written
        person = self._by_email.get(email)
        if person is None:  # not in the directory: no user id to find it by in the LMS
            self.unknown_people += written
            return
        pair = person << _REF_BITS | ref_index
        value = record_id << _FLAGS | (_WRITTEN[ASSIGNMENT] * assignment) | (_WRITTEN[COMPLETION] * completion)
        if pair in self._pairs:
            self._more.append((pair, value))
        else:
            self._pairs[pair] = value

    def listed(self, kind: str, user_id: str | None, ref: str | None) -> None:
        """Note one row of the LMS's ``kind`` list (assignment or completion); either may be missing."""
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
        self._pairs[pair] = value | _LISTED[kind]

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

    def forget_listed(self, kind: str) -> None:
        """Clear what the LMS listed of ``kind`` (a listing read again from the start)."""
        mask = ~_LISTED[kind]
        for pair, value in self._pairs.items():
            self._pairs[pair] = value & mask
        self._unknown = {u for u in self._unknown if u[0] != kind}
        self.unreadable[kind] = 0
        self._blind_people[kind].clear()
        self._blind_refs[kind].clear()
        self._blind_all[kind] = False

    def missing(self) -> Iterator[Missing]:
        """Each record with a write recorded as done whose pair the LMS did not list, and no
        unreadable row may be, in the order held."""
        for pair, value in itertools.chain(self._pairs.items(), self._more):
            lost_assignment, lost_completion, _ = self._judge(pair, value)
            if lost_assignment or lost_completion:
                yield Missing(value >> _FLAGS, lost_assignment, lost_completion)

    def unverified(self) -> int:
        """Records with a write recorded as done that the LMS did not list, but an unreadable row may be."""
        return sum(self._judge(pair, value)[2] for pair, value in itertools.chain(self._pairs.items(), self._more))

    def _judge(self, pair: int, value: int) -> tuple[bool, bool, bool]:
        """(assignment missing, completion missing, some write unverified) of one held record."""
        listed = self._pairs[pair]
        person, ref_index = pair >> _REF_BITS, pair & ((1 << _REF_BITS) - 1)
        out = []
        unsure = False
        for kind in (ASSIGNMENT, COMPLETION):
            absent = bool(value & _WRITTEN[kind]) and not listed & _LISTED[kind]
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
