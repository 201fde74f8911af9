"""Connections as the receiver serves them (issue 13, items 5, 9, 10), driven over raw sockets.

Slow senders must not hold memory or sockets without bound (a body-read timeout, a cap on
bodies read at once, an idle/header timeout); aiohttp's own parser refusals answer the JSON
error shape and echo nothing; a ``Content-Encoding`` is refused (the signature covers the
bytes as sent). The server is :class:`~lmsbridge.receiver.ReceiverRunner`, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import pytest
from aiohttp import web

from lmsbridge.broker import Broker, Names
from lmsbridge.metrics import Metrics
from lmsbridge.receiver import ReceiverRunner, create_app
from lmsbridge.settings import BrokerSettings, ReceiverSettings
from lmsbridge.testing.webhooks import exec_assignment, exec_event
from lmsbridge.vendors import build_signer
from tests.receiver.conftest import NOW, SECRET, SOURCES

BODY_LIMIT = 262_144


@dataclass
class Served:
    """A receiver on a real port, with the aiohttp server to count its open connections."""

    port: int
    runner: web.AppRunner
    names: Names

    def connections(self) -> int:
        server = self.runner.server
        assert server is not None
        return len(server.connections)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


Start = Callable[..., "asyncio.Future[Served]"]


@pytest.fixture
async def serve(amqp_url: str, broker_prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    """Start the receiver with the given ``ReceiverSettings`` overrides (real RabbitMQ, fixed clock)."""
    broker = Broker(amqp_url, BrokerSettings(prefix=broker_prefix), [], name=request.node.name)
    await broker.start(wait=10)
    runners: list[web.AppRunner] = []

    async def start(**overrides: object) -> Served:
        settings = ReceiverSettings.model_validate({"max_body_bytes": BODY_LIMIT, **overrides})
        app = create_app(settings, SOURCES, broker, Metrics(), clock=lambda: NOW)
        runner = ReceiverRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return Served(int(runner.addresses[0][1]), runner, Names(broker_prefix))

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()
    await broker.close()


def head(length: int, extra: str = "", path: str = "/webhooks/acme-sales") -> bytes:
    """A request line and headers announcing a JSON body of ``length`` bytes."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def response_of(reader: asyncio.StreamReader, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on the connection, read until it closes."""
    raw = await asyncio.wait_for(reader.read(), timeout)  # read() returns at EOF: the server closed
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def slow_sender(port: int, data: bytes) -> tuple[socket.socket, asyncio.Task[None]]:
    """A raw socket sending ``data`` as fast as the server takes it (no copy kept on this side)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    return sock, asyncio.create_task(loop.sock_sendall(sock, data))


async def answer_on(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Everything the server sends on ``sock`` until it closes the connection, parsed."""
    loop = asyncio.get_running_loop()
    raw = b""

    async def until_closed() -> None:
        nonlocal raw
        while chunk := await loop.sock_recv(sock, 65536):
            raw += chunk

    await asyncio.wait_for(until_closed(), timeout)
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_slow_bodies_are_cut_off_and_the_excess_is_turned_away(serve: Start) -> None:
    """40 senders stop 144 bytes short of a 262,144-byte body: at most ``max_reading`` are read (the rest
    get 503 + Retry-After at once), those time out with 408 after ``body_timeout``, and every connection
    is closed. Repeated waves leave the process's RSS flat (before: each wave held ~10 MB for ever)."""
    # The 40 connect in milliseconds; the timeout leaves a wide margin, for were the first readers to
    # time out before the last senders arrived (a CI run once stalled past 0.5 s), their slots would
    # rightly go to the late ones, and more than 4 would see a 408.
    served = await serve(body_timeout=1.0, max_reading=4, keepalive_timeout=5.0)
    data = head(BODY_LIMIT) + b"x" * (BODY_LIMIT - 144)

    async def wave() -> list[tuple[int, dict[str, str], bytes]]:
        senders = [await slow_sender(served.port, data) for _ in range(40)]
        try:
            return await asyncio.gather(*(answer_on(sock, timeout=5.0) for sock, _ in senders))
        finally:
            for sock, sending in senders:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await sending
                sock.close()

    started = time.monotonic()
    answers = await wave()
    elapsed = time.monotonic() - started
    statuses = sorted(status for status, _, _ in answers)
    assert 1 <= statuses.count(408) <= 4, statuses
    assert set(statuses) <= {408, 503}, statuses
    for status, headers, body in answers:
        error = orjson.loads(body)["error"]
        assert error["code"] == ("body_timeout" if status == 408 else "busy")
        assert headers["connection"].lower() == "close"
        if status == 503:
            assert headers["retry-after"] == "5"
    assert elapsed < 4.0

    baseline = rss_bytes()
    for _ in range(3):
        await wave()
    grown = rss_bytes() - baseline
    print(f"slow senders: first wave answered in {elapsed:.2f} s, RSS grew {grown / 1e6:.1f} MB over 3 more waves")
    assert grown < 6_000_000, grown
    for _ in range(50):
        if served.connections() == 0:
            break
        await asyncio.sleep(0.1)
    assert served.connections() == 0


async def test_a_reading_slot_is_given_back_after_a_timeout(serve: Start) -> None:
    """After slow bodies time out, a normal signed webhook is read and accepted again."""
    served = await serve(body_timeout=0.3, max_reading=1)
    reader, writer = await served.connect()
    writer.write(head(1000) + b"{")
    status, _, _ = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 408
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("a-1", "jane@acme.example")))
    headers = build_signer("standard-webhooks", SECRET).sign(body, message_id="msg-slot", timestamp=int(NOW))
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n"
    reader, writer = await served.connect()
    writer.write(head(len(body), extra) + body)
    status, _, answer = await response_of(reader, timeout=5.0)
    writer.close()
    assert status == 202, answer


@pytest.mark.parametrize(
    "sent", [b"", b"POST /webhooks/acme-sales HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "], ids=["silent", "trickle"]
)
async def test_idle_connections_and_slow_headers_are_closed(serve: Start, sent: bytes) -> None:
    """A connection that sends nothing, or trickles its headers, is closed after ``keepalive_timeout``."""
    served = await serve(keepalive_timeout=0.5)
    reader, writer = await served.connect()
    started = time.monotonic()
    writer.write(sent)
    for _ in range(20):  # keep trickling: each byte is progress, but not a request
        await asyncio.sleep(0.1)
        if reader.at_eof():
            break
        if sent:
            writer.write(b"a")
    rest = await asyncio.wait_for(reader.read(), 3.0)
    writer.close()
    assert rest == b"" or rest.startswith(b"HTTP/1.1 4")
    assert time.monotonic() - started < 3.0


async def test_keep_alive_connections_close_after_the_idle_timeout(serve: Start) -> None:
    """After a response, an idle keep-alive connection is closed after ``keepalive_timeout``."""
    served = await serve(keepalive_timeout=0.5)
    reader, writer = await served.connect()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), 3.0)
    writer.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    "request_bytes",
    [
        head(0).replace(b"Content-Length: 0", b"Content-Length: 12abc-secret"),
        head(2, "X-Evil: one\x01secret-token\r\n") + b"{}",
        head(2, "X-Evil: one\x00secret-token\r\n") + b"{}",
        head(2).replace(b"Content-Length: 2", b"Content-Length: 2\r\nContent-Length: 3") + b"{}",
    ],
    ids=["bad-content-length", "control-char", "nul", "two-content-lengths"],
)
async def test_parser_errors_answer_the_json_error_shape_and_echo_nothing(serve: Start, request_bytes: bytes) -> None:
    """aiohttp's own refusals (before any route runs) are 400 in ``{"error": {type, code, message}}``,
    ``application/json``, and quote none of the request (before: ``text/plain`` echoing the header)."""
    served = await serve()
    reader, writer = await served.connect()
    writer.write(request_bytes)
    status, headers, body = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert set(error) == {"type", "code", "message"}
    assert (error["type"], error["code"]) == ("invalid_request", "malformed_http")
    for echoed in (b"secret", b"abc", b"X-Evil"):
        assert echoed not in body


CHUNKED = (
    b"POST /webhooks/acme-sales HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
BAD_CHUNKS = [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"]


@pytest.mark.parametrize("chunk", BAD_CHUNKS, ids=["bad-size", "no-crlf"])
async def test_a_malformed_chunked_body_is_a_json_400(serve: Start, chunk: bytes) -> None:
    """A chunked body aiohttp cannot parse, sent with its headers, is 400 ``malformed_http`` in the
    JSON shape (not a 503 inviting the sender to retry the same bytes)."""
    served = await serve()
    reader, writer = await served.connect()
    writer.write(CHUNKED + chunk)
    status, headers, body = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"]["code"] == "malformed_http"


@pytest.mark.parametrize("chunk", BAD_CHUNKS, ids=["bad-size", "no-crlf"])
async def test_a_chunk_gone_bad_while_the_body_is_read_ends_with_the_body_timeout(serve: Start, chunk: bytes) -> None:
    """When the framing breaks after the route started reading, aiohttp does not fail the body: the read
    ends at ``body_timeout`` with a JSON 408 and the connection is closed (bounded, never a hang)."""
    served = await serve(body_timeout=0.5)
    reader, writer = await served.connect()
    writer.write(CHUNKED + b"1\r\n{\r\n")
    await asyncio.sleep(0.2)  # the route is reading the body when the bad chunk arrives
    writer.write(chunk)
    status, headers, body = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 408, body
    assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP ", "identity, gzip"])
async def test_encoded_bodies_are_refused_with_415_even_when_signed_as_sent(serve: Start, encoding: str) -> None:
    """A body with a ``Content-Encoding`` is 415 ``unsupported_content_encoding``, even when the signature
    covers the compressed bytes as sent (before: aiohttp inflated it, so that signature never matched)."""
    served = await serve()
    raw = orjson.dumps(exec_event("assignment.created", exec_assignment("a-1", "jane@acme.example")))
    body = gzip.compress(raw)
    headers = build_signer("standard-webhooks", SECRET).sign(body, message_id="msg-gz", timestamp=int(NOW))
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + f"Content-Encoding: {encoding}\r\n"
    reader, writer = await served.connect()
    writer.write(head(len(body), extra + "Connection: close\r\n") + body)
    status, _, answer = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 415, answer
    assert orjson.loads(answer)["error"]["code"] == "unsupported_content_encoding"


async def test_identity_encoding_is_accepted(serve: Start) -> None:
    """``Content-Encoding: identity`` is no encoding: the webhook is accepted."""
    served = await serve()
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("a-2", "jane@acme.example")))
    headers = build_signer("standard-webhooks", SECRET).sign(body, message_id="msg-id", timestamp=int(NOW))
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Content-Encoding: identity\r\n"
    reader, writer = await served.connect()
    writer.write(head(len(body), extra + "Connection: close\r\n") + body)
    status, _, answer = await response_of(reader, timeout=5.0)
    writer.close()
    assert status == 202, answer


def test_the_document_says_encoded_bodies_are_refused() -> None:
    """The OpenAPI document names the 415 for a ``Content-Encoding`` and the 408/503 of slow senders."""
    from lmsbridge.receiver.openapi import document

    operation = document(SOURCES, max_body_bytes=BODY_LIMIT)["paths"]["/webhooks/acme-sales"]["post"]
    assert "unsupported_content_encoding" in operation["responses"]["415"]["description"]
    assert "body_timeout" in operation["responses"]["408"]["description"]
    assert "busy" in operation["responses"]["503"]["description"]
    assert "malformed_http" in operation["responses"]["400"]["description"]


def signed_head(body: bytes, message_id: str, extra: str = "") -> bytes:
    """A request line and headers for ``body``, signed for ``acme-sales``, plus ``extra`` headers."""
    headers = build_signer("standard-webhooks", SECRET).sign(body, message_id=message_id, timestamp=int(NOW))
    return head(len(body), "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + extra)


@pytest.mark.parametrize(
    ("declared", "extra", "path", "status", "code"),
    [
        (BODY_LIMIT + 1, "", "/webhooks/acme-sales", 413, "body_too_large"),
        (100, "", "/webhooks/nobody", 404, "unknown_source"),
        (100, "Content-Encoding: gzip\r\n", "/webhooks/acme-sales", 415, "unsupported_content_encoding"),
        (100, "Content-Type: text/plain\r\n", "/webhooks/acme-sales", 415, "unsupported_media_type"),
    ],
    ids=["too-large", "unknown-source", "encoded", "not-json"],
)
async def test_expect_100_continue_is_refused_before_the_body_is_sent(
    serve: Start, declared: int, extra: str, path: str, status: int, code: str
) -> None:
    """A sender that asks ``Expect: 100-continue`` and whose headers alone are refused gets the
    final refusal at once, with no ``100 Continue`` before it, and the connection closed, without
    having sent a byte of its body (before: aiohttp said 100 Continue to everything, so a sender
    uploaded a body the receiver then refused unread; curl sent 1.4 MB of a 3 MB body)."""
    served = await serve()
    request = head(declared, f"Expect: 100-continue\r\n{extra}", path=path)
    if "Content-Type: text/plain" in extra:
        request = request.replace(b"Content-Type: application/json\r\n", b"")
    reader, writer = await served.connect()
    writer.write(request)  # the headers only: a sender waits for 100 Continue before its body
    raw = await asyncio.wait_for(reader.read(), 3.0)  # returns at EOF: the server closed
    writer.close()
    assert not raw.startswith(b"HTTP/1.1 100"), raw
    top, _, body = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    assert int(lines[0].split()[1]) == status, raw
    assert "connection: close" in [line.lower() for line in lines[1:]]
    assert orjson.loads(body)["error"]["code"] == code


async def test_expect_100_continue_asks_for_the_body_of_an_acceptable_request(serve: Start) -> None:
    """A signed webhook sent with ``Expect: 100-continue`` gets ``100 Continue``, sends its body on
    that, and is accepted (202) on a connection that stays open for the next request."""
    served = await serve()
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("a-3", "jane@acme.example")))
    reader, writer = await served.connect()
    writer.write(signed_head(body, "msg-expect", "Expect: 100-continue\r\n"))
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3.0)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    top = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).decode("latin-1")
    length = next(int(line.split(":")[1]) for line in top.split("\r\n") if line.lower().startswith("content-length"))
    answer = await asyncio.wait_for(reader.readexactly(length), 5.0)
    assert top.startswith("HTTP/1.1 202"), top
    assert orjson.loads(answer)["status"] == "accepted"
    # The connection is kept: a second request on it is answered too.
    writer.write(head(2, "Connection: close\r\n") + b"{}")
    status, _, _ = await response_of(reader, timeout=5.0)
    writer.close()
    assert status == 401  # unsigned: refused, but answered on the kept connection


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/webhooks/acme-sales"), ("GET", "/healthz"), ("POST", "/nowhere")]
)
async def test_an_expectation_other_than_100_continue_is_a_json_417(serve: Start, method: str, path: str) -> None:
    """``Expect: something-else`` is 417 ``unsupported_expectation`` in the JSON error shape, on a
    webhook route, another route and no route at all (before: aiohttp's ``text/plain`` "Unknown
    Expect", raised before the app's error handling ran)."""
    served = await serve()
    reader, writer = await served.connect()
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nExpect: something-else\r\nConnection: close\r\n\r\n{}".encode()
    )
    status, headers, answer = await response_of(reader, timeout=3.0)
    writer.close()
    assert status == 417, answer
    assert headers["content-type"].startswith("application/json")
    assert orjson.loads(answer)["error"]["code"] == "unsupported_expectation"


async def test_expect_is_ignored_in_http_1_0(serve: Start) -> None:
    """An HTTP/1.0 request has no interim answers: its ``Expect`` is ignored (RFC 9110 10.1.1), and a
    signed webhook sent with its body is accepted."""
    served = await serve()
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("a-4", "jane@acme.example")))
    request = signed_head(body, "msg-http10", "Expect: 100-continue\r\n").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    reader, writer = await served.connect()
    writer.write(request + body)
    status, _, answer = await response_of(reader, timeout=5.0)
    writer.close()
    assert status == 202, answer
