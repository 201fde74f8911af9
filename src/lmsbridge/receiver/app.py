"""The webhook receiver: verify, validate, publish with confirms, and only then answer 202.

Order of checks for ``POST /webhooks/{source}``: first what the headers show: known source
(404), a ``Content-Encoding`` (415: the signature covers the bytes as sent, so bodies are never
decompressed), declared body size (413), media type (415). Then a free reading slot (503 +
``Retry-After`` when ``receiver.max_reading`` bodies are being read already), the body within
``receiver.body_timeout`` (408, connection closed) and the size limit (413), signature and
timestamp over the raw bytes (401/400), JSON (400), body contents (422, including what the
database cannot hold). Then the event is published; ``202`` means RabbitMQ confirmed it.

A request sent with ``Expect: 100-continue`` gets the headers' checks before its body is asked
for: a refusal answers at once and closes the connection, so a sender never uploads a body that
would be refused unread. An ``Expect`` of anything else is refused with 417.

Connections: one idle (or still sending its request line and headers) for
``receiver.keepalive_timeout`` seconds is closed, so slow senders hold neither memory nor
sockets for long (see :mod:`.server` for the parser's own refusals).

The accepted path is the hot one (issue 15): one info line per webhook (``webhook.queued``;
``webhook.received`` is at debug; each line is given the request's correlation id, source and
message id rather than binding contextvars), metric children looked up once (kept by
:class:`~lmsbridge.metrics.Metrics`), a plain route per configured source, and a body that
arrived whole with its headers (the usual small webhook) taken without a reading slot or a timer.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol

import orjson
from aiohttp import HttpVersion11, web

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import (
    BodyTimeout,
    BodyTooLarge,
    ExpectationFailed,
    ReceiverBusy,
    RejectRequest,
    UnknownSource,
    UnsupportedMediaType,
)
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.receiver.errors import from_exception
from lmsbridge.receiver.openapi import document
from lmsbridge.receiver.server import RETRY_AFTER_KEY
from lmsbridge.settings import ReceiverSettings, SourceSettings
from lmsbridge.vendors import Ignored, Verifier, build_verifier, parse_event

log = get_logger(__name__)

_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_JSON_TYPES = ("application/json",)
_IDENTITY = ("", "identity")
_LINGER_SECONDS = 1.0
"""After an early refusal, how long the rest of an unread body is drained before closing."""

Check = Callable[[], Awaitable[bool]]
Receive = Callable[[web.Request], Awaitable[web.StreamResponse]]
Expect = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


class EventPublisher(Protocol):
    """What the receiver needs of the broker."""

    async def publish_event(self, event: AssignmentEvent, *, timeout: float) -> None: ...


class _Recent:
    """Message ids accepted lately, so a platform's quick retry is not published twice.

    Only an optimisation: the consumer's inbox is what guarantees no second effect.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._size = size

    def seen(self, source: str, message_id: str) -> bool:
        return (source, message_id) in self._ids

    def add(self, source: str, message_id: str) -> None:
        self._ids[(source, message_id)] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)


class _Slots:
    """Things done at once, up to a limit: request bodies being read (what bounds the memory slow
    senders can hold), and with ``max_in_flight`` webhooks being handled (what bounds the loop time
    a flood can take from a worker in the same process)."""

    def __init__(self, limit: int, what: str = "bodies are being read") -> None:
        self._limit = limit
        self._what = what
        self._used = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot; ``ReceiverBusy`` (503) when none is free."""
        if self._used >= self._limit:
            raise ReceiverBusy(f"{self._limit} {self._what} already")
        self._used += 1
        try:
            yield
        finally:
            self._used -= 1


STATE_KEY = web.AppKey("state", dict)


def create_app(
    settings: ReceiverSettings,
    sources: Mapping[str, SourceSettings],
    publisher: EventPublisher,
    metrics: Metrics,
    *,
    checks: Mapping[str, Check] | None = None,
    clock: Callable[[], float] = time.time,
    max_in_flight: int | None = None,
) -> web.Application:
    """Build the receiver application; ``max_in_flight`` webhooks handled at once at most (else 503)."""
    verifiers: dict[str, Verifier] = {name: build_verifier(src) for name, src in sources.items()}
    recent = _Recent()
    state: dict[str, bool] = {"shutting_down": False}
    reading = _Slots(settings.max_reading)
    in_flight = None if max_in_flight is None else _Slots(max_in_flight, "webhooks are being handled")
    readiness = dict(checks or {})

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            response = from_exception(exc, retry_after=settings.retry_after)
            if isinstance(exc, BodyTimeout | ReceiverBusy):
                response.force_close()  # the body was not (fully) read: this connection is done
            if isinstance(exc, ReceiverBusy):
                log.warning("webhook.busy", path=request.path, status=503)
            elif response.status >= 500:
                log.error(
                    "webhook.unavailable",
                    path=request.path,
                    error_type=type(exc).__name__,
                    status=response.status,
                )
            return response

    async def receive(request: web.Request, name: str) -> web.StreamResponse:
        started = time.perf_counter()
        # The request's log fields, passed to its lines rather than bound as contextvars: binding
        # and unbinding them was a visible share of the hot path, and nothing below logs.
        fields = {"correlation_id": _correlation_id(request), "source": name}
        try:
            if in_flight is None:
                return await _receive(request, name, fields)
            with in_flight.take():
                return await _receive(request, name, fields)
        except Exception as exc:
            rejected(exc, name, fields)
            raise
        finally:
            metrics.receive_seconds.observe(time.perf_counter() - started)

    def rejected(exc: Exception, name: str, fields: dict[str, str]) -> None:
        code = getattr(exc, "code", "internal_error")
        metrics.stage("rejected")
        metrics.rejections.labels(source=name if name in sources else "(unknown)", code=code).inc()
        log.info("webhook.rejected", code=code, error=str(exc), status=getattr(exc, "status", 503), **fields)

    async def expect(request: web.Request, name: str) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse what the headers already show (unknown source, a
        ``Content-Encoding``, a declared size over the limit, not JSON) before the sender sends
        the body, else ask for it. (aiohttp's own handler says 100 Continue to everything.)"""
        if request.version < HttpVersion11:
            return None  # HTTP/1.0 has no interim answers: the expectation is ignored (RFC 9110 10.1.1)
        try:
            if request.headers.get("Expect", "").strip().lower() != "100-continue":
                raise ExpectationFailed("the receiver understands only Expect: 100-continue")
            _refused_by_headers(request, name)
        except RejectRequest as exc:
            fields = {"correlation_id": _correlation_id(request), "source": name}
            rejected(exc, name, fields)
            response = from_exception(exc, retry_after=settings.retry_after)
            response.force_close()  # the sender may or may not send the body now: this connection is done
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's handler: the response proper starts after this
        return None

    def _refused_by_headers(request: web.Request, name: str) -> SourceSettings:
        """The configured source, unless the request's headers alone are reason to refuse it."""
        source = sources.get(name)
        if source is None:
            raise UnknownSource(f"no source named {name!r} is configured")
        if request.headers.get("Content-Encoding", "").strip().lower() not in _IDENTITY:
            raise UnsupportedMediaType(
                "send the body without Content-Encoding: the signature covers the bytes as sent",
                code="unsupported_content_encoding",
            )
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise BodyTooLarge(f"the body is larger than {settings.max_body_bytes} bytes")
        if request.content_type not in _JSON_TYPES and not request.content_type.endswith("+json"):
            raise UnsupportedMediaType("the body must be application/json")
        return source

    def receiver_of(name: str) -> tuple[Receive, Expect]:
        async def receive_source(request: web.Request) -> web.StreamResponse:
            return await receive(request, name)

        async def expect_source(request: web.Request) -> web.StreamResponse | None:
            return await expect(request, name)

        return receive_source, expect_source

    async def receive_any(request: web.Request) -> web.StreamResponse:
        return await receive(request, request.match_info["source"])

    async def expect_any(request: web.Request) -> web.StreamResponse | None:
        return await expect(request, request.match_info["source"])

    async def _receive(request: web.Request, name: str, fields: dict[str, str]) -> web.StreamResponse:
        correlation_id = fields["correlation_id"]
        metrics.stage("received")
        log.debug("webhook.received", remote=request.remote, **fields)
        source = _refused_by_headers(request, name)
        body = _arrived(request, settings.max_body_bytes)
        if body is None:
            with reading.take():
                try:
                    async with asyncio.timeout(settings.body_timeout):
                        body = await _read_body(request, settings.max_body_bytes)
                except TimeoutError:
                    raise BodyTimeout(f"the body did not arrive within {settings.body_timeout:g} seconds") from None
        verified = verifiers[name].verify(request.headers, body, clock())
        key = source.key_name(verified.key_index)
        parsed = parse_event(
            source.platform,
            body,
            source=name,
            message_id=verified.message_id,
            received_at=datetime.fromtimestamp(clock(), UTC),
            correlation_id=correlation_id,
        )
        metrics.signature_matched(name, key)
        fields["message_id"] = parsed.message_id
        if isinstance(parsed, Ignored):
            metrics.stage("ignored")
            log.info("webhook.ignored", event_type=parsed.type, key=key, **fields)
            return _accepted(parsed.message_id, "ignored", correlation_id)
        if recent.seen(name, parsed.message_id):
            metrics.stage("deduplicated")
            log.info("webhook.deduplicated", event_type=parsed.type, key=key, **fields)
            return _accepted(parsed.message_id, "accepted", correlation_id)
        await publisher.publish_event(parsed, timeout=settings.publish_timeout)
        recent.add(name, parsed.message_id)
        metrics.stage("accepted")
        log.info("webhook.queued", event_type=parsed.type, key=key, assignment_id=parsed.assignment_id, **fields)
        return _accepted(parsed.message_id, "accepted", correlation_id)

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.StreamResponse:
        results = {name: await check() for name, check in readiness.items()}
        results["accepting"] = not state["shutting_down"]
        ready = all(results.values())
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "checks": results}, status=200 if ready else 503
        )

    async def metrics_view(_: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    openapi_body = orjson.dumps(document(sources, max_body_bytes=settings.max_body_bytes))

    async def openapi(_: web.Request) -> web.StreamResponse:
        return web.Response(body=openapi_body, content_type="application/json")

    app = web.Application(
        middlewares=[errors],
        client_max_size=settings.max_body_bytes + 1,
        handler_args={
            "keepalive_timeout": settings.keepalive_timeout,
            "lingering_time": _LINGER_SECONDS,
            # Bodies are verified as sent: aiohttp must not inflate them (nor spend memory doing so).
            "auto_decompress": False,
        },
    )
    app[STATE_KEY] = state
    app[RETRY_AFTER_KEY] = settings.retry_after
    # A plain route per configured source (a dict lookup, where the pattern is a regex match per
    # request); the pattern route answers the rest (404 unknown_source).
    for name in sources:
        if _PLAIN_NAME.match(name):
            handler, expect_handler = receiver_of(name)
            app.router.add_post(f"/webhooks/{name}", handler, expect_handler=expect_handler)
    app.router.add_post("/webhooks/{source}", receive_any, expect_handler=expect_any)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi)
    return app


def mark_shutting_down(app: web.Application) -> None:
    """Turn /readyz to 503 so load balancers stop sending while requests drain."""
    app[STATE_KEY]["shutting_down"] = True


def _arrived(request: web.Request, limit: int) -> bytes | None:
    """The whole body when it is already in memory (its end was parsed), else ``None``."""
    content = request.content
    if not content.is_eof():
        return None
    body = content.read_nowait()
    if len(body) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    return body


async def _read_body(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _correlation_id(request: web.Request) -> str:
    given = request.headers.get("X-Correlation-Id") or request.headers.get("X-Request-Id")
    if given and _CORRELATION.match(given):
        return given
    return secrets.token_hex(16)


def _accepted(message_id: str, status: str, correlation_id: str) -> web.Response:
    return web.Response(
        status=202,
        body=orjson.dumps({"id": message_id, "status": status}),
        headers={"Content-Type": "application/json", "X-Correlation-Id": correlation_id},
    )
