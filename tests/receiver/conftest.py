"""A receiver app on a real HTTP server, publishing to the real RabbitMQ, with a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from lmsbridge.broker import Broker, Names
from lmsbridge.broker.topology import EVENTS_KEY
from lmsbridge.metrics import Metrics
from lmsbridge.receiver import create_app
from lmsbridge.settings import BrokerSettings, ReceiverSettings, SourceSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
STRIPE_SECRET = "limeplate_stripe_secret"
GITHUB_SECRET = "limeplate_github_secret"
NOW = 1_780_000_000.0


@dataclass
class Receiver:
    """A running receiver, its metrics, its clock and a way to count queued events."""

    url: str
    metrics: Metrics
    clock: list[float]
    session: aiohttp.ClientSession
    amqp_url: str
    names: Names

    async def post(
        self, source: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with self.session.post(f"{self.url}/webhooks/{source}", data=body, headers=headers) as response:
            return (
                response.status,
                await response.json(content_type=None),
                {k.lower(): v for k, v in response.headers.items()},
            )

    async def queued(self) -> int:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.names.events, passive=True)
            return int(queue.declaration_result.message_count or 0)

    async def replace_events_queue(self, arguments: dict[str, Any] | None) -> None:
        """Delete the events queue; with ``arguments``, a classic queue takes its place and binding."""
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(self.names.events)
            if arguments is not None:
                queue = await channel.declare_queue(self.names.events, durable=True, arguments=arguments)
                await queue.bind(self.names.exchange, routing_key=EVENTS_KEY)

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


# A limeplate source needs its platform API configured (the receiver never calls it).
PLATFORM_API = {"api_base_url": "http://127.0.0.1:9", "api_key": "unused-platform-key"}

SOURCES = {
    "acme-sales": SourceSettings.model_validate(
        {"platform": "exec", "secrets": [OLD_SECRET, SECRET], "secret_names": ["2026-q2", "2026-q3"], "accounts": ["a"]}
    ),
    "acme-security": SourceSettings.model_validate(
        {"platform": "limeplate", "secrets": [SECRET], "accounts": ["a"], **PLATFORM_API}
    ),
    "acme-stripe": SourceSettings.model_validate(
        {
            "platform": "limeplate",
            "signature": "stripe",
            "signature_header": "Limeplate-Signature",
            "secrets": [STRIPE_SECRET],
            "accounts": ["a"],
            **PLATFORM_API,
        }
    ),
    "acme-github": SourceSettings.model_validate(
        {
            "platform": "exec",
            "signature": "github",
            "delivery_header": "X-GitHub-Delivery",
            "secrets": [GITHUB_SECRET],
            "accounts": ["a"],
        }
    ),
}


@pytest.fixture
async def receiver(amqp_url: str, broker_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    """The receiver with four sources (three signature schemes) and a clock fixed at NOW."""
    broker = Broker(amqp_url, BrokerSettings(prefix=broker_prefix), [], name=request.node.name)
    await broker.start(wait=10)
    metrics = Metrics()
    clock = [NOW]
    app = create_app(ReceiverSettings(max_body_bytes=4096), SOURCES, broker, metrics, clock=lambda: clock[0])
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    yield Receiver(str(server.make_url("")).rstrip("/"), metrics, clock, session, amqp_url, Names(broker_prefix))
    await session.close()
    await server.close()
    await broker.close()
