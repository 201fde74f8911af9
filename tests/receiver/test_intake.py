"""Intake over HTTP: every refusal has its status and stable code; accepted means queued."""

from __future__ import annotations

import orjson
import pytest

from lmsbridge.testing.webhooks import exec_assignment, exec_event, limeplate_assignment, limeplate_created
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import GITHUB_SECRET, NOW, OLD_SECRET, SECRET, STRIPE_SECRET, Receiver

BODY = orjson.dumps(exec_event("assignment.created", exec_assignment("a1", "jane@acme.example"), event_id="evt_1"))
JSON = {"Content-Type": "application/json"}


def signed(body: bytes = BODY, *, secret: str = SECRET, ts: float = NOW, msg: str = "msg_1") -> dict[str, str]:
    return {**JSON, **build_signer("standard-webhooks", secret).sign(body, message_id=msg, timestamp=int(ts))}


async def test_accepted_event_is_queued_once_and_answers_its_id(receiver: Receiver) -> None:
    """A valid webhook gets 202 with its message id, and exactly one message is queued."""
    status, body, headers = await receiver.post("acme-sales", BODY, signed())
    assert (status, body) == (202, {"id": "msg_1", "status": "accepted"})
    assert headers["x-correlation-id"]
    assert await receiver.queued() == 1


async def test_a_returned_or_nacked_publish_is_503_and_a_retry_is_accepted(receiver: Receiver) -> None:
    """No 2xx unless RabbitMQ confirmed a routed message: with the events queue gone (returned as
    unroutable) or refusing publishes (nacked) the answer is 503 + Retry-After; the platform's retry
    of the same message id, once the queue is back, is queued rather than taken for a duplicate."""
    await receiver.replace_events_queue(None)
    status, body, headers = await receiver.post("acme-sales", BODY, signed())
    assert (status, body["error"]["code"], headers["retry-after"]) == (503, "broker_unavailable", "5")
    await receiver.replace_events_queue({"x-max-length": 0, "x-overflow": "reject-publish"})
    status, body, _ = await receiver.post("acme-sales", BODY, signed())
    assert (status, body["error"]["code"]) == (503, "broker_unavailable")
    await receiver.replace_events_queue({})
    status, body, _ = await receiver.post("acme-sales", BODY, signed())
    assert (status, body) == (202, {"id": "msg_1", "status": "accepted"})
    assert await receiver.queued() == 1
    assert receiver.metric("lmsbridge_events_total", stage="accepted") == 1


async def test_rotation_accepts_either_key_and_counts_which(receiver: Receiver) -> None:
    """During rotation both secrets verify; metrics name the key that matched, never its value."""
    await receiver.post("acme-sales", BODY, signed(secret=OLD_SECRET, msg="m-old"))
    await receiver.post("acme-sales", BODY, signed(secret=SECRET, msg="m-new"))
    assert receiver.metric("lmsbridge_signature_matches_total", source="acme-sales", key="2026-q2") == 1
    assert receiver.metric("lmsbridge_signature_matches_total", source="acme-sales", key="2026-q3") == 1
    assert SECRET.encode() not in receiver.metrics.render()


@pytest.mark.parametrize(
    ("source", "body", "headers", "status", "code"),
    [
        ("nope", BODY, signed(), 404, "unknown_source"),
        ("acme-sales", BODY, {**JSON}, 401, "signature_missing"),
        ("acme-sales", BODY, signed(secret=SECRET.replace("M", "N")), 401, "signature_mismatch"),
        ("acme-sales", BODY + b" ", signed(), 401, "signature_mismatch"),
        ("acme-sales", BODY, signed(ts=NOW - 301), 401, "timestamp_too_old"),
        ("acme-sales", BODY, signed(ts=NOW + 31), 401, "timestamp_in_future"),
        ("acme-sales", BODY, {k: v for k, v in signed().items() if k != "webhook-id"}, 400, "header_missing"),
        ("acme-sales", BODY, {**signed(), "webhook-timestamp": "yesterday"}, 400, "header_invalid"),
        ("acme-sales", BODY, {**signed(), "Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ("acme-sales", b"{not json", signed(b"{not json"), 400, "malformed_json"),
        ("acme-sales", b"x" * 5000, signed(b"x" * 5000), 413, "body_too_large"),
    ],
    ids=[
        "unknown-source",
        "no-signature",
        "wrong-secret",
        "tampered-body",
        "stale",
        "future",
        "no-id",
        "bad-timestamp",
        "not-json-type",
        "not-json",
        "too-large",
    ],
)
async def test_each_refusal_has_its_status_and_code(
    receiver: Receiver, source: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    """Each refusal answers its status with the JSON error body and code, and queues nothing."""
    got, payload, _ = await receiver.post(source, body, headers)
    assert (got, payload["error"]["code"]) == (status, code)
    assert set(payload["error"]) >= {"type", "code", "message"}
    assert await receiver.queued() == 0
    assert (
        receiver.metric("lmsbridge_rejections_total", source=source if source != "nope" else "(unknown)", code=code)
        == 1
    )


@pytest.mark.parametrize(("offset", "status"), [(-300, 202), (-301, 401), (30, 202), (31, 401)])
async def test_tolerance_edges(receiver: Receiver, offset: int, status: int) -> None:
    """Timestamps exactly at the tolerance (300 s old) or skew (30 s ahead) pass; one second more fails."""
    got, _, _ = await receiver.post("acme-sales", BODY, signed(ts=NOW + offset))
    assert got == status


async def test_body_missing_what_we_need_names_the_json_path(receiver: Receiver) -> None:
    """A body without the scenario gets 422 and the path of the problem."""
    data = exec_assignment("a1", "jane@acme.example")
    del data["scenario"]
    body = orjson.dumps(exec_event("assignment.created", data))
    status, payload, _ = await receiver.post("acme-sales", body, signed(body))
    assert status == 422
    assert payload["error"]["code"] == "invalid_body"
    assert payload["error"]["path"] == "data.scenario"


async def test_other_event_types_are_acknowledged_ignored_and_counted(receiver: Receiver) -> None:
    """An event type lmsbridge does not handle gets 202 'ignored', is not queued, and is counted."""
    body = orjson.dumps({"id": "evt_x", "type": "assignment.updated", "timestamp": "2026-05-29T08:00:00Z", "data": {}})
    status, payload, _ = await receiver.post("acme-sales", body, signed(body))
    assert (status, payload["status"]) == (202, "ignored")
    assert await receiver.queued() == 0
    assert receiver.metric("lmsbridge_events_total", stage="ignored") == 1


async def test_wrong_method_is_405_json(receiver: Receiver) -> None:
    """GET on a webhook path is 405 with the JSON error body."""
    async with receiver.session.get(f"{receiver.url}/webhooks/acme-sales") as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_stripe_and_github_schemes_accept_their_signatures(receiver: Receiver) -> None:
    """Stripe-style (id from the body) and GitHub-style (id from the delivery header) sources accept."""
    lime = orjson.dumps(limeplate_created(limeplate_assignment("asg-9"), event_id="evt_stripe"))
    stripe = build_signer("stripe", STRIPE_SECRET, header="Limeplate-Signature").sign(
        lime, message_id="", timestamp=int(NOW)
    )
    status, payload, _ = await receiver.post("acme-stripe", lime, {**JSON, **stripe})
    assert (status, payload["id"]) == (202, "evt_stripe")
    github = build_signer("github", GITHUB_SECRET, delivery_header="X-GitHub-Delivery").sign(
        BODY, message_id="delivery-77", timestamp=int(NOW)
    )
    status, payload, _ = await receiver.post("acme-github", BODY, {**JSON, **github})
    assert (status, payload["id"]) == (202, "delivery-77")
    assert await receiver.queued() == 2


async def test_health_ready_metrics_and_openapi(receiver: Receiver) -> None:
    """/healthz, /readyz, /metrics and /openapi.json answer; the document lists every source."""
    for path, status in (("/healthz", 200), ("/readyz", 200), ("/metrics", 200)):
        async with receiver.session.get(receiver.url + path) as response:
            assert response.status == status
    async with receiver.session.get(receiver.url + "/openapi.json") as response:
        document = await response.json()
    assert {"/webhooks/acme-sales", "/webhooks/acme-security", "/healthz", "/readyz"} <= set(document["paths"])
    assert SECRET not in orjson.dumps(document).decode()
