"""Exec's truth (spec 001): every scenario assignment, page by page, as the webhook's events.

``GET /rest/v1/scenarios/assignments?page=N&page_size=100`` from page 1 to
``pagination.total_pages``: one call per page. Each assignment becomes the event its webhook
would have been, through the webhook's own adapter (:func:`lmsbridge.vendors.exec.to_event`):
``completed`` a Pass, ``did_not_pass`` a Fail (``best_score`` the percentage), ``past_due``,
``in_progress`` and ``not_started`` an assignment without completion. Exec keeps no completion
time, so a completion first seen by a pass is dated when the pass saw it; the event itself is
dated when the assignment was created (a title read by a pass is not a newer title).

A page is validated whole before any of it is used: a status outside 001's list, a missing
user e-mail or pagination object stops the source with the field named. So does a page with no
assignment before the last one ``total_pages`` names: page-numbered lists have no empty page
before their end, and a platform that kept saying there were more would keep a pass (and its
lease) going, a call a page, for as long as it said so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedPage, RejectRequest
from lmsbridge.reconcile.batches import Batch, parse
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.vendors import exec as exec_platform
from lmsbridge.vendors.envelope import Envelope, Lenient

PATH = "/rest/v1/scenarios/assignments"
PAGE_SIZE = 100
Status = Literal["not_started", "in_progress", "completed", "past_due", "did_not_pass"]


class Pagination(Lenient):
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    total_count: int = Field(ge=0)
    total_pages: int = Field(ge=0)


class Listed(Lenient):
    status: Status


class Page(Lenient):
    data: list[dict[str, Any]]
    pagination: Pagination


async def exec_batches(
    client: PlatformClient, source: str, *, correlation_id: str, now: Callable[[], datetime]
) -> AsyncIterator[Batch]:
    """One :class:`Batch` per page, in order; raises to stop the source."""
    page, total_pages = 1, 1
    while page <= total_pages:
        where = f"page {page}"
        document = await client.get_json(
            PATH, {"page": str(page), "page_size": str(PAGE_SIZE)}, what=f"{source}: {where}"
        )
        parsed = parse(Page, document, where)
        if not parsed.data and page < parsed.pagination.total_pages:
            raise MalformedPage(
                f"{where}: empty, though total_pages says {parsed.pagination.total_pages}: the paging is inconsistent",
                field="pagination.total_pages",
            )
        seen = now()
        events = [_event(raw, f"data[{i}]", source, correlation_id, seen, where) for i, raw in enumerate(parsed.data)]
        total_pages = parsed.pagination.total_pages
        yield Batch(
            where=f"page {page} of {max(total_pages, page)}",
            events=events,
            assignments=len(events),
            total=parsed.pagination.total_count,
        )
        page += 1


def _event(
    raw: dict[str, Any], path: str, source: str, correlation_id: str, seen: datetime, where: str
) -> AssignmentEvent:
    status = parse(Listed, raw, where, prefix=path).status
    kind = "assignment.completed" if status in exec_platform.OUTCOMES else "assignment.created"
    # Dated when the assignment was created, not now: a title read now is not a newer title (the
    # LMS would get its learning object again); the completion alone carries the time seen.
    envelope = Envelope(type=kind, timestamp=seen, data=raw)
    try:
        event = exec_platform.to_event(
            envelope, message_id="reconcile:pending", source=source, received_at=seen, correlation_id=correlation_id
        )
    except RejectRequest as exc:
        field_name = (exc.path or "data").replace("data", path, 1)
        raise MalformedPage(f"{where}: malformed ({exc.message.replace('data', path, 1)})", field=field_name) from None
    people = (
        tuple(p.model_copy(update={"completed_at": seen}) for p in event.people)
        if kind != "assignment.created"
        else event.people
    )
    return event.model_copy(update={"occurred_at": event.assigned_at or seen, "people": people})
