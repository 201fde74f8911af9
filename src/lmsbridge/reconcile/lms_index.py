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
    LMS's rows with :meth:`listed`; :meth:`missing` and :attr:`unknown_writes` are the findings.
    ``people`` is the account's directory (e-mail -> StackOne user id).
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
        self.written = 0
        self.unknown_people = 0

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

    def listed(self, kind: str, user_id: str, ref: str) -> None:
        """Note one row of the LMS's ``kind`` list (assignment or completion)."""
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

    def forget_listed(self, kind: str) -> None:
        """Clear what the LMS listed of ``kind`` (a listing read again from the start)."""
        mask = ~_LISTED[kind]
        for pair, value in self._pairs.items():
            self._pairs[pair] = value & mask
        self._unknown = {u for u in self._unknown if u[0] != kind}

    def missing(self) -> Iterator[Missing]:
        """Each record with a write recorded as done whose pair the LMS did not list, in the order held."""
        for pair, value in itertools.chain(self._pairs.items(), self._more):
            listed = self._pairs[pair]
            lost_assignment = bool(value & _WRITTEN[ASSIGNMENT]) and not listed & _LISTED[ASSIGNMENT]
            lost_completion = bool(value & _WRITTEN[COMPLETION]) and not listed & _LISTED[COMPLETION]
            if lost_assignment or lost_completion:
                yield Missing(value >> _FLAGS, lost_assignment, lost_completion)

    @property
    def unknown_writes(self) -> list[tuple[str, str, str]]:
        """(kind, user id, learning object) of each LMS row for one of lmsbridge's learning objects
        that lmsbridge holds no record of: assignments first, then by user and learning object."""
        return sorted(self._unknown, key=lambda u: (u[0] != ASSIGNMENT, u[1], u[2]))
