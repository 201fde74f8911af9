"""Live first: a reconcile pass's work never makes a webhook wait behind it at the StackOne budget."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson
import pytest

from lmsbridge.domain import AssignmentEvent
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from lmsbridge.vendors import parse_event
from tests.pipeline.conftest import ACCOUNT, SettingsFactory, settled

pytestmark = pytest.mark.usefixtures("steady_gc")  # times sub-second behaviour in this process

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


def pass_event(assignment_id: str, email: str) -> AssignmentEvent:
    """The event a reconcile pass would queue for an Exec assignment it found (a reconcile correlation id)."""
    body = orjson.dumps(exec_event("assignment.created", exec_assignment(assignment_id, email)))
    event = parse_event(
        "exec",
        body,
        source="acme-sales",
        message_id=None,
        received_at=datetime.now(UTC),
        correlation_id=f"reconcile-{uuid.uuid4().hex[:12]}",
    )
    assert isinstance(event, AssignmentEvent)
    return event


async def test_a_live_webhook_overtakes_reconciliation_work_waiting_for_the_budget(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """StackOne budget 240/min (a slot every 0.26 s): 10 background events (a pass's, 20 requests)
    are queued, then a webhook arrives for a new person. Its two requests take the next slots:
    at most one background assignment lands between its 202 and its own assignment, and every
    background event is still written, once."""
    settings = make_settings(stackone={"rate_limit_per_minute": 240})
    runtime = await start_runtime(settings)
    background = []
    for i in range(10):
        email = f"pass{i}@acme.example"
        stackone.add_user(ACCOUNT, email)
        background.append(pass_event(f"rec-{i}", email))
    for event in background:
        await runtime.broker.publish_event(event, timeout=5.0, background=True)
    deadline = time.monotonic() + 10
    while len(stackone.assignments()) < 2 and time.monotonic() < deadline:  # the pass's work under way
        await asyncio.sleep(0.05)
    live_user = stackone.add_user(ACCOUNT, "live@acme.example")
    before = len(stackone.assignments())
    sent = time.monotonic()
    status, _ = await sender_for(runtime).post(
        "acme-sales", exec_event("assignment.created", exec_assignment("live-1", "live@acme.example"))
    )
    assert status == 202
    while not any(a["user_id"] == live_user for a in stackone.assignments()) and time.monotonic() < sent + 10:
        await asyncio.sleep(0.02)
    order = [a["user_id"] for a in stackone.assignments()]
    assert live_user in order, "the live webhook was never written"
    overtaken = order.index(live_user) - before
    assert overtaken <= 1, f"{overtaken} background assignments were written before the live one"

    await settled(runtime, timeout=30)
    assert len(stackone.assignments()) == 11
    assert stackone.conflicts == 0


async def test_reconciliation_work_starts_only_once_the_live_job_in_flight_is_done(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """A webhook's create hangs 0.6 s at StackOne; a pass's event queued meanwhile is not stored nor
    written until the live job is done: the live assignment lands first, though it was sent first
    and answered last, and both are written once."""
    runtime = await start_runtime(make_settings())
    live_user = stackone.add_user(ACCOUNT, "live@acme.example")
    pass_user = stackone.add_user(ACCOUNT, "pass@acme.example")
    stackone.fail_next(0, delay=0.6, path_contains=f"/users/{live_user}/assignments", method="POST")
    status, _ = await sender_for(runtime).post(
        "acme-sales", exec_event("assignment.created", exec_assignment("live-1", "live@acme.example"))
    )
    assert status == 202
    deadline = time.monotonic() + 10
    while not any(live_user in r.path and r.method == "POST" for r in stackone.requests):
        assert time.monotonic() < deadline, "the live create never reached StackOne"
        await asyncio.sleep(0.01)
    await runtime.broker.publish_event(pass_event("rec-1", "pass@acme.example"), timeout=5.0, background=True)

    await settled(runtime, timeout=30)
    assert [a["user_id"] for a in stackone.assignments()] == [live_user, pass_user]
    assert stackone.conflicts == 0
