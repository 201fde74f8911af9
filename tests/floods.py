"""A real HTTP server whose every answer is far larger than any client of lmsbridge should read."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

CHUNK = 1024 * 1024


@dataclass
class Flood:
    """Where the flooding server listens and how many bytes it got onto the wire."""

    url: str
    sent: int = 0


@asynccontextmanager
async def flood(total: int, *, status: int = 200, sized: bool = False, gzip: bool = False) -> AsyncIterator[Flood]:
    """Answer any request with ``status`` and ``total`` bytes of a JSON-looking body.

    ``sized`` sends a ``Content-Length`` (else the body is chunked); ``gzip`` compresses it (a
    small ``Content-Length`` that unpacks to ``total`` bytes). Writing stops when the client hangs up.
    """
    state = Flood(url="")

    async def answer(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "application/json"}
        chunk = b'{"data": [' + b" " * (CHUNK - 10)
        compressor = zlib.compressobj(wbits=31) if gzip else None
        if compressor is not None:
            headers["Content-Encoding"] = "gzip"
            parts = [compressor.compress(chunk) for _ in range(total // CHUNK)] + [compressor.flush()]
            payload: list[bytes] | None = [b"".join(parts)]
        else:
            payload = None
        response = web.StreamResponse(status=status, headers=headers)
        if sized:
            response.content_length = len(payload[0]) if payload is not None else total // CHUNK * CHUNK
        await response.prepare(request)
        try:
            for part in payload if payload is not None else (chunk for _ in range(total // CHUNK)):
                await response.write(part)
                state.sent += len(part)
        except (ConnectionResetError, ConnectionError):
            return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()
