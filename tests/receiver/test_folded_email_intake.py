"""Over HTTP: an e-mail that is no e-mail once folded is 422 at ``data.user.email``, nothing queued.

The adapter-level cases are in ``tests/vendors/test_folded_emails.py``.
"""

from __future__ import annotations

import orjson
import pytest

from lmsbridge.testing.webhooks import exec_assignment, exec_event
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import NOW, SECRET, Receiver


@pytest.mark.parametrize("email", ["bob@", "bob@\u200b"], ids=ascii)
async def test_the_receiver_answers_422_to_an_email_that_folds_to_no_email(receiver: Receiver, email: str) -> None:
    """An Exec assignment for ``"bob@\\u200b"`` (a zero-width space for a domain) is answered as one
    for ``"bob@"``: 422 ``invalid_body`` at ``data.user.email``, and nothing reaches RabbitMQ (it
    was 202, and a record for person ``"bob@"`` parked for good)."""
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("as-1", email)))
    headers = {
        "Content-Type": "application/json",
        **build_signer("standard-webhooks", SECRET).sign(body, message_id="msg-email", timestamp=int(NOW)),
    }
    status, payload, _ = await receiver.post("acme-sales", body, headers)
    assert status == 422, payload
    assert (payload["error"]["code"], payload["error"]["path"]) == ("invalid_body", "data.user.email")
    assert await receiver.queued() == 0
