"""Over HTTP: what the database cannot hold is 422 naming the field, before any 202 (issue 13, item 1).

The adapter-level cases are in ``tests/vendors/test_storable.py``; this checks the receiver's
answer and that nothing reaches RabbitMQ, for each kind of input that looped in the worker.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lmsbridge.testing.webhooks import exec_assignment, exec_event, limeplate_assignment, limeplate_completed
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import NOW, SECRET, Receiver


def lime(**assignment: Any) -> bytes:
    """A limeplate completion whose assignment has ``assignment``'s fields changed."""
    body = limeplate_completed({**limeplate_assignment("asg-1"), **assignment}, "jane@acme.example", event_id="e1")
    return orjson.dumps(body)


def exec_body(**changes: Any) -> bytes:
    """An Exec ``assignment.created`` with top-level ``changes``."""
    return orjson.dumps(exec_event("assignment.created", {**exec_assignment("a-1", "jane@acme.example"), **changes}))


CASES = [
    ("acme-security", lime(targetTitle="SQL\x00Injection"), "data.assignment.targetTitle"),
    ("acme-security", lime(targetId="t" * 600), "data.assignment.targetId"),
    ("acme-security", lime(deadline="9999-12-31T23:59:59-12:00"), "data.assignment.deadline"),
    ("acme-sales", exec_body(id="a\x00"), "data.id"),
    ("acme-sales", exec_body(user={"id": "u", "email": "\u0130" * 300 + "@acme.example"}), "data.user.email"),
    ("acme-sales", exec_body(best_score=1.0).replace(b'"best_score":1.0', b'"best_score":1e309'), "data.best_score"),
]


@pytest.mark.parametrize(("source", "body", "path"), CASES, ids=[c[2] for c in CASES])
async def test_unstorable_bodies_are_422_naming_the_field_and_nothing_is_queued(
    receiver: Receiver, source: str, body: bytes, path: str
) -> None:
    """NUL in a title or an id, an over-long reference, an e-mail that grows when lower-cased, a date that
    overflows in UTC, a number too large for a double: each is 422 ``invalid_body`` at its field; 0 queued."""
    headers = {
        "Content-Type": "application/json",
        **build_signer("standard-webhooks", SECRET).sign(body, message_id="msg-db", timestamp=int(NOW)),
    }
    status, payload, _ = await receiver.post(source, body, headers)
    assert status == 422, payload
    assert (payload["error"]["code"], payload["error"]["path"]) == ("invalid_body", path)
    assert await receiver.queued() == 0
