"""Hostile input in bulk: forged, tampered, stale and future-dated webhooks, none accepted, none a 5xx.

``LMSBRIDGE_HOSTILE_REQUESTS`` (default 10,000) requests against the live receiver, spread over
the three signature schemes (GitHub style signs no timestamp, so it gets only forged and
tampered ones): each is refused with a 4xx, nothing reaches RabbitMQ, and the refusals are
counted by their stable codes.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import orjson

from lmsbridge.testing.webhooks import exec_assignment, exec_event, limeplate_assignment, limeplate_created
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import GITHUB_SECRET, NOW, SECRET, STRIPE_SECRET, Receiver

KINDS = ("forged", "tampered", "stale", "future")
SCHEMES = {  # source -> (scheme, real secret, signer options)
    "acme-sales": ("standard-webhooks", SECRET, {}),
    "acme-stripe": ("stripe", STRIPE_SECRET, {"header": "Limeplate-Signature"}),
    "acme-github": ("github", GITHUB_SECRET, {"delivery_header": "X-GitHub-Delivery"}),
}


def hostile(i: int, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    """Request ``i``: its kind, source, body and headers."""
    kind = KINDS[i % len(KINDS)]
    source = list(SCHEMES)[(i // len(KINDS)) % len(SCHEMES)]
    scheme, secret, options = SCHEMES[source]
    if scheme == "github" and kind in ("stale", "future"):  # GitHub signs no timestamp: replays meet the inbox
        kind = "forged" if kind == "stale" else "tampered"
    if source == "acme-stripe":
        body = orjson.dumps(limeplate_created(limeplate_assignment(f"asg-{i}"), event_id=f"evt_h{i}"))
    else:
        body = orjson.dumps(exec_event("assignment.created", exec_assignment(f"a{i}", f"p{i}@acme.example")))
    timestamp = NOW
    if kind == "forged":
        secret = "whsec_" + "Zm9yZ2VkLWtleS1mb3ItdGVzdHM=" if scheme == "standard-webhooks" else secret + "-forged"
    elif kind == "stale":
        timestamp = NOW - 301 - rng.randint(0, 86_400)
    elif kind == "future":
        timestamp = NOW + 31 + rng.randint(0, 86_400)
    headers = build_signer(scheme, secret, **options).sign(body, message_id=f"msg_h{i}", timestamp=int(timestamp))
    if kind == "tampered":
        body = body.replace(b"p", b"q", 1) if source != "acme-stripe" else body.replace(b"asg", b"asx", 1)
    return kind, source, body, {"Content-Type": "application/json", **headers}


async def test_hostile_requests_are_all_refused_with_4xx_and_nothing_is_queued(receiver: Receiver) -> None:
    """Forged, tampered, stale and future-dated webhooks on every scheme: 0 accepted, 0 5xx, 0 queued."""
    n = int(os.environ.get("LMSBRIDGE_HOSTILE_REQUESTS", "10000"))
    rng = random.Random(6)
    requests = [hostile(i, rng) for i in range(n)]
    statuses: Counter[tuple[str, int]] = Counter()
    slots = asyncio.Semaphore(32)

    async def send(kind: str, source: str, body: bytes, headers: dict[str, str]) -> None:
        async with slots:
            status, payload, _ = await receiver.post(source, body, headers)
            statuses[(kind, status)] += 1
            assert "error" in payload, payload

    await asyncio.gather(*(send(*r) for r in requests))

    print(f"hostile requests: {n}, statuses by kind: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) == n
    assert all(400 <= status < 500 for _, status in statuses), statuses
    assert {status for _, status in statuses} <= {400, 401}
    assert await receiver.queued() == 0
    refused = sum(
        receiver.metric("lmsbridge_rejections_total", source=source, code=code)
        for source in SCHEMES
        for code in ("signature_mismatch", "timestamp_too_old", "timestamp_in_future", "malformed_request")
    )
    assert refused == n
