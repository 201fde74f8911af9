"""The security-training platform's truth (spec 003): one list call, detail only where it moved.

``GET /api/public/v1/assignments`` lists every assignment, active or not, with
``totalAssignees`` and ``completedAssignees`` but no people. An assignment's members are read
(``GET /assignments/{id}``) only when those aggregates differ from what lmsbridge holds for
it (its records, or what the last pass saw), or it is unknown: a quiet day costs one call.
An inactive assignment lmsbridge never saw is not pushed. The list is validated whole first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from urllib.parse import quote

from pydantic import Field

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedPage
from lmsbridge.reconcile.batches import Batch, parse
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.storage.reconcile import ReconcileStore
from lmsbridge.vendors.limeplate import Assignment, Member, learning_object

PATH = "/api/public/v1/assignments"


class Listed(Assignment):
    """A list entry: the assignment and its aggregates."""

    is_active: bool
    total_assignees: int = Field(ge=0)
    completed_assignees: int = Field(ge=0)


class Detail(Listed):
    """``GET /assignments/{id}``: the entry plus one row per member."""

    user_progress: list[Member]


async def limeplate_batches(
    client: PlatformClient,
    store: ReconcileStore,
    source: str,
    *,
    correlation_id: str,
    now: Callable[[], datetime],
) -> AsyncIterator[Batch]:
    """A first batch for the list, then one per assignment whose members were read."""
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
            people=tuple(
                m.person(passed=True if (m.progress_percent or 0) >= 100 else None) for m in detail.user_progress
            ),
        )
        yield Batch(
            where=where,
            events=[event],
            detail=True,
            snapshot=(detail.id, detail.total_assignees, detail.completed_assignees),
        )
