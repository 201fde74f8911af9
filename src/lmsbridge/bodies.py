"""The one bounded reader of an HTTP answer's body, for every client of a server lmsbridge does not run.

``response.read()`` reads whatever comes: a proxy streaming an error page for ever, an endpoint
answering with a file, or a gzip bomb (kilobytes on the wire, gigabytes unpacked) filled the
worker's memory until the kernel killed it. :func:`read_at_most` stops past a bound instead, and
each client maps that to its usual error for an answer it cannot read.
"""

from __future__ import annotations

import aiohttp
from aiohttp import hdrs

__all__ = ["PLATFORM_ANSWER_LIMIT", "STACKONE_ANSWER_LIMIT", "MiB", "read_at_most"]

MiB = 1024 * 1024
STACKONE_ANSWER_LIMIT = 16 * MiB
"""The largest StackOne answer read: a page of 100 rows is well under 1 MiB."""
PLATFORM_ANSWER_LIMIT = 64 * MiB
"""The largest training-platform answer read: the whole assignment list, or an organisation-wide
assignment's members (about 300,000 at ~200 bytes a member)."""


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of ``response`` unpacked, or None once it is longer than ``limit`` bytes.

    An unencoded answer whose ``Content-Length`` is within the bound is read in one go; any other
    is read a chunk at a time, and reading stops at the first byte past the bound (the connection
    is then closed rather than reused).
    """
    length = response.content_length
    encoding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if length is not None and encoding == "identity":
        return await response.read() if length <= limit else None
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
