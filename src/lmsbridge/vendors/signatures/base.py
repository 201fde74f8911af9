"""The signature interface shared by every scheme, and the checks they have in common.

Every scheme verifies the raw bytes before anything parses them, compares in constant
time, and accepts when any configured secret matches (rotation). Refusals raise
:class:`~lmsbridge.errors.SignatureRejected` (401) or :class:`~lmsbridge.errors.MalformedRequest`
(400) with a stable code; messages never contain a secret, a signature or a computed MAC.

Header values arrive as aiohttp decodes them (UTF-8, else surrogate escapes), so nothing
here assumes ASCII: MACs are compared as bytes, and text that must be encoded is checked first.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from lmsbridge.errors import ConfigError, MalformedRequest, SignatureRejected

MAX_MESSAGE_ID = 255
MAX_SIGNATURES = 16
"""More candidate signatures than this in one request is abuse, not rotation."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified signature tells: the message id (when the scheme carries one) and the key."""

    message_id: str | None
    key_index: int
    timestamp: int | None


class Verifier(Protocol):
    """Checks one request's signature for one source."""

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified: ...


class Signer(Protocol):
    """Signs a body as a platform would; returns the headers to send."""

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]: ...


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (aiohttp's headers are; a plain dict may not be)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def signature_header(headers: Mapping[str, str], name: str) -> str:
    """The signature header's value; 401 ``signature_missing`` when it is absent or blank."""
    value = header(headers, name)
    if value is None or not value.strip():
        raise SignatureRejected(f"the request carries no {name} header", code="signature_missing")
    return value


def message_id(value: str, name: str) -> str:
    """A message id from a header: printable text of at most 255 UTF-8 bytes; 400 otherwise.

    Bytes, not characters: the id becomes the AMQP ``message_id``, a short string of 255 bytes.
    """
    if not value.isprintable():
        raise MalformedRequest(f"{name} contains unprintable characters", code="header_invalid")
    if len(value.encode()) > MAX_MESSAGE_ID:
        raise MalformedRequest(f"{name} is longer than {MAX_MESSAGE_ID} bytes", code="header_invalid")
    return value


def parse_timestamp(raw: str) -> int:
    """A unix-seconds timestamp header; 400 ``header_invalid`` when it is not one."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise MalformedRequest("the signature timestamp is not unix seconds", code="header_invalid")
    return int(raw)


def check_timestamp(timestamp: int, now: float, *, tolerance: int, skew: int) -> None:
    """Refuse timestamps older than ``tolerance`` or more than ``skew`` seconds ahead (edges accepted)."""
    if timestamp < now - tolerance:
        raise SignatureRejected(f"the signature is older than {tolerance} seconds", code="timestamp_too_old")
    if timestamp > now + skew:
        raise SignatureRejected(f"the signature is more than {skew} seconds in the future", code="timestamp_in_future")


def hex_digest(value: str) -> bytes | None:
    """A hex-encoded SHA-256 MAC as bytes, or ``None`` when ``value`` is not 64 hex digits."""
    value = value.strip()
    if len(value) != 64 or not value.isascii():
        return None
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None


def mismatch() -> SignatureRejected:
    """The one refusal for a signature that no configured secret produced."""
    return SignatureRejected("no configured secret produced this signature", code="signature_mismatch")


def secret_bytes(secret: str, scheme: str) -> bytes:
    """An HMAC secret used as is (stripe, github); an empty one is a configuration error."""
    if not secret:
        raise ConfigError(f"{scheme}: a signing secret is empty")
    return secret.encode()
