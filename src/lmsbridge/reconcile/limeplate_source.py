"""The security-training platform's truth (spec 003): one list call, detail only where it moved.

``GET /api/public/v1/assignments`` lists every assignment, active or not, with
``totalAssignees`` and ``completedAssignees`` but no people. An assignment's members are read
(``GET /assignments/{id}``) only when those aggregates differ from what lmsbridge holds for
it (its records, or what the last pass saw), or it is unknown: a quiet day costs one call.
An inactive assignment lmsbridge never saw is not pushed. The list is validated whole first;
an assignment's member rows one by one (:mod:`lmsbridge.vendors.limeplate_members`), so an
unusable row is skipped with a warning and only an assignment whose rows are all unusable
stops the pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import Field

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedPage, RejectRequest
from lmsbridge.reconcile.batches import Batch, parse
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.storage.reconcile import ReconcileStore
from lmsbridge.vendors.limeplate import Assignment, Member, learning_object
from lmsbridge.vendors.limeplate_members import usable_members

PATH = "/api/public/v1/assignments"


class Listed(Assignment):
    """A list entry: the assignment and its aggregates."""

    is_active: bool
    total_assignees: int = Field(ge=0)
    completed_assignees: int = Field(ge=0)


class Detail(Listed):
    """``GET /assignments/{id}``: the entry plus one row per member (raw: see :func:`_members`)."""

    user_progress: list[Any]


def _members(detail: Detail, where: str, on_skipped: Callable[[int], None] | None) -> list[Member]:
    """The usable member rows; ``MalformedPage`` naming the first problem's field if rows were present but none is."""
    try:
        return usable_members(detail.user_progress, assignment_id=detail.id, on_skipped=on_skipped)
    except RejectRequest as exc:
        raise MalformedPage(f"{where}: malformed ({exc.message})", field=exc.path or "(body)") from None


async def limeplate_batches(
    client: PlatformClient,
    store: ReconcileStore,
    source: str,
    *,
    correlation_id: str,
    now: Callable[[], datetime],
    on_skipped: Callable[[int], None] | None = None,
) -> AsyncIterator[Batch]:
    """A first batch for the list, then one per assignment whose members were read (unusable
    member rows skipped, their number given to ``on_skipped``)."""
    document = await client.get_json(PATH, what=f"{source}: the assignment list")
    if not isinstance(document, list):
        raise MalformedPage(f"{source}: the assignment list is not a JSON array", field="(body)")
    entries = [parse(Listed, raw, "the assignment list", prefix=f"[{i}]") for i, raw in enumerate(document)]
    ids = [e.id for e in entries]
    held = await store.held(source, ids)
    seen = await store.seen(source)
    todo: list[Listed] = []
    in_step = skipped = 0
    for entry in entries:
        aggregates = (entry.total_assignees, entry.completed_assignees)
        known = entry.id in held or entry.id in seen
        if not entry.is_active and not known:
            skipped += 1
        elif held.get(entry.id) == aggregates or seen.get(entry.id) == aggregates:
            in_step += entry.total_assignees
        else:
            todo.append(entry)
    yield Batch(
        where="the assignment list",
        assignments=len(entries),
        total=len(entries),
        in_step=in_step,
        skipped_inactive=skipped,
    )
    for entry in todo:
        where = f"assignment {entry.id}"
        raw = await client.get_json(f"{PATH}/{quote(entry.id, safe='')}", what=f"{source}: {where}", missing_ok=True)
        if raw is None:
            continue  # deleted since it was listed
        detail = parse(Detail, raw, where)
        people = _members(detail, where, on_skipped)
        at = now()
        event = AssignmentEvent(
            message_id="reconcile:pending",
            source=source,
            platform="limeplate",
            type="assignment.created",
            occurred_at=detail.created_at or at,  # a title read now is not a newer title
            received_at=at,
            correlation_id=correlation_id,
            assignment_id=detail.id,
            learning_object=learning_object(detail),
            assigned_at=detail.created_at,
            due_date=detail.deadline,
            people=tuple(m.person(passed=True if (m.progress_percent or 0) >= 100 else None) for m in people),
        )
        yield Batch(
            where=where,
            events=[event],
            detail=True,
            snapshot=(detail.id, detail.total_assignees, detail.completed_assignees),
        )
