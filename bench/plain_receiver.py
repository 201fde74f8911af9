"""A plain receiver on lmsbridge's stack, for bench_receiver: how much of a webhook's CPU each step costs.

    python bench/plain_receiver.py AMQP_URL PORT LEVEL

aiohttp reads the body, aiormq publishes it with confirms (mandatory, persistent, to a quorum
queue of its own, deleted on SIGTERM), and a 202 goes back once RabbitMQ confirmed. Each level
adds one of the steps `lmsbridge serve` takes for an accepted webhook, with lmsbridge's own code:

0. nothing else (the least a receiver that keeps promise 1 can do);
1. + the signature (Standard Webhooks, as bench_receiver signs);
2. + parsing and validating the body into the canonical event;
3. + the message lmsbridge publishes (the event's JSON and its properties and headers);
4. + one info log line, JSON to stderr;
5. + the metrics serve counts and observes for an accepted webhook.

What is still missing at level 5 against `lmsbridge serve`: the error middleware and the
per-source route, the body-size and media-type checks, the recent-id memory and the correlation id
taken from the request.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
import uuid
from datetime import UTC, datetime

import aiormq
import orjson
import uvloop
from aiohttp import web
from pamqp.commands import Basic

from lmsbridge import logs
from lmsbridge.broker.codec import EventEncoder
from lmsbridge.domain import AssignmentEvent
from lmsbridge.metrics import Metrics
from lmsbridge.settings import SourceSettings
from lmsbridge.vendors import build_verifier, parse_event

SOURCE = "bench"
PLAIN = Basic.Properties(content_type="application/json", delivery_mode=2)


async def serve(amqp: str, port: int, level: int, secret: str) -> None:
    """Serve ``POST /webhooks/{source}`` at ``level`` until SIGTERM."""
    verifier = build_verifier(SourceSettings(platform="exec", secrets=[secret], accounts=["acc-bench"]))
    encoder = EventEncoder(SOURCE)
    metrics = Metrics()
    if level >= 4:
        logs.configure(level="info", fmt="json")
    log = logs.get_logger("bench.plain")
    queue = f"bench-plain-{uuid.uuid4().hex[:6]}"
    connection = await aiormq.connect(amqp)
    channel = await connection.channel(publisher_confirms=True)
    await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})

    async def accept(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await request.read()
        correlation_id = secrets.token_hex(16)
        message, properties = body, PLAIN
        event: AssignmentEvent | None = None
        if level >= 1:
            verified = verifier.verify(request.headers, body, time.time())
            if level >= 2:
                parsed = parse_event(
                    "exec",
                    body,
                    source=SOURCE,
                    message_id=verified.message_id,
                    received_at=datetime.fromtimestamp(time.time(), UTC),
                    correlation_id=correlation_id,
                )
                assert isinstance(parsed, AssignmentEvent)
                event = parsed
        if level >= 3 and event is not None:
            message, properties = encoder.encode(event)
        confirm = await channel.basic_publish(message, routing_key=queue, properties=properties, mandatory=True)
        if not isinstance(confirm, Basic.Ack):
            return web.json_response({"error": "not confirmed"}, status=503)
        if level >= 4 and event is not None:
            log.info(
                "webhook.queued",
                event_type=event.type,
                key="0",
                assignment_id=event.assignment_id,
                correlation_id=correlation_id,
                source=SOURCE,
                message_id=event.message_id,
            )
        if level >= 5:
            metrics.stage("received")
            metrics.stage("accepted")
            metrics.signature_matches.labels(source=SOURCE, key="0").inc()
            metrics.receive_seconds.observe(time.perf_counter() - started)
        return web.Response(
            status=202,
            body=orjson.dumps({"id": event.message_id if event else "x", "status": "accepted"}),
            headers={"Content-Type": "application/json", "X-Correlation-Id": correlation_id},
        )

    app = web.Application()
    app.router.add_post("/webhooks/{source}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()  # SIGTERM: delete the queue (and what it holds) before leaving
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await channel.queue_delete(queue)
    await connection.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
