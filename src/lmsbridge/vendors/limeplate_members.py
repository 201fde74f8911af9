"""An assignment's ``userProgress``, validated row by row: one unusable row costs only its member.

``GET /api/public/v1/assignments/{id}`` (spec 003) lists every member of a team or org
assignment. A row lmsbridge cannot use (no e-mail, an e-mail that is not a string, a row
that is not an object, ...) is skipped, with one warning per assignment naming the
assignment, how many rows were skipped and the first problem's field path (never the row's
values), and counted through ``on_skipped`` (the caller's metric: vendors import none). Only
when rows were present and none is usable does the whole assignment fail, with the
:class:`~lmsbridge.errors.UnusableBody` that validating the list whole raised before; an
empty list stays an empty list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lmsbridge.errors import UnusableBody
from lmsbridge.logs import get_logger
from lmsbridge.vendors.envelope import validate
from lmsbridge.vendors.limeplate import Member

ROWS = "userProgress"

log = get_logger(__name__)


def usable_members(
    rows: Sequence[object], *, assignment_id: str, on_skipped: Callable[[int], None] | None = None
) -> list[Member]:
    """The rows that are a usable :class:`Member`, in order; the others skipped, with one warning,
    their number given to ``on_skipped``.

    Raises ``UnusableBody`` (``path`` like ``userProgress[0].email``) for the first problem
    when rows were present and none of them is usable.
    """
    members: list[Member] = []
    first: UnusableBody | None = None
    skipped = 0
    for i, row in enumerate(rows):
        try:
            members.append(validate(Member, row, prefix=f"{ROWS}[{i}]"))
        except UnusableBody as exc:
            skipped += 1
            first = first or exc
    if first is None:
        return members
    if not members:
        raise first
    if on_skipped is not None:
        on_skipped(skipped)
    log.warning(
        "limeplate.members_skipped",
        assignment_id=assignment_id,
        skipped=skipped,
        usable=len(members),
        first_problem=first.path,
    )
    return members
