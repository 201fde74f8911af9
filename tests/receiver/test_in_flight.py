"""A bound on webhooks handled at once (``max_in_flight``, on under `run`): beyond it, 503 at once."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from lmsbridge.domain import AssignmentEvent
from lmsbridge.metrics import Metrics
from lmsbridge.receiver import create_app
from lmsbridge.settings import ReceiverSettings
from lmsbridge.testing.webhooks import exec_assignment, exec_event
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import NOW, SECRET, SOURCES

BODY = orjson.dumps(exec_event("assignment.created", exec_assignment("a1", "jane@acme.example")))


class HeldPublisher:
    """Confirms nothing until released, so requests stay in flight."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.published: list[str] = []

    async def publish_event(self, event: AssignmentEvent, *, timeout: float) -> None:
        self.entered.set()
        await self.release.wait()
        self.published.append(event.message_id)


def signed(message_id: str) -> dict[str, str]:
    headers = build_signer("standard-webhooks", SECRET).sign(BODY, message_id=message_id, timestamp=int(NOW))
    return {"Content-Type": "application/json", **headers}


async def test_beyond_max_in_flight_webhooks_get_503_with_retry_after_until_one_finishes() -> None:
    """With one webhook in flight and ``max_in_flight`` 1, the next is refused at once with 503 busy and
    Retry-After, nothing of it published; once the first is confirmed, the retry is accepted."""
    publisher = HeldPublisher()
    app = create_app(ReceiverSettings(), SOURCES, publisher, Metrics(), clock=lambda: NOW, max_in_flight=1)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/webhooks/acme-sales"))
    try:
        async with aiohttp.ClientSession() as session:

            async def post(message_id: str) -> tuple[int, dict[str, object], str | None]:
                async with session.post(url, data=BODY, headers=signed(message_id)) as response:
                    return response.status, await response.json(), response.headers.get("Retry-After")

            first = asyncio.create_task(post("msg-first"))
            await asyncio.wait_for(publisher.entered.wait(), 5)
            status, body, retry_after = await post("msg-second")
            assert (status, retry_after) == (503, "5")
            assert body["error"] == {
                "type": "unavailable",
                "code": "busy",
                "message": "too many requests are being received at once; retry later",
            }
            publisher.release.set()
            assert (await first)[0] == 202
            assert (await post("msg-second"))[0] == 202
            assert publisher.published == ["msg-first", "msg-second"]
    finally:
        await server.close()
