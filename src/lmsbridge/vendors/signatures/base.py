"""The signature interface shared by every scheme, and the checks they have in common.

Every scheme verifies the raw bytes before anything parses them, compares in constant
time, and accepts when any configured secret matches (rotation). Refusals raise
:class:`~lmsbridge.errors.SignatureRejected` (401) or :class:`~lmsbridge.errors.MalformedRequest`
(400) with a stable code; messages never contain a secret, a signature or a computed MAC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from lmsbridge.errors import MalformedRequest, SignatureRejected


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


def parse_timestamp(raw: str) -> int:
    """A unix-seconds timestamp header; 400 ``header_invalid`` when it is not one."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise MalformedRequest("the signature timestamp is not unix seconds", code="header_invalid")
    return int(raw)


def check_timestamp(timestamp: int, now: float, *, tolerance: int, skew: int) -> None:
    """Refuse timestamps older than ``tolerance`` or more than ``skew`` seconds ahead."""
    if timestamp < now - tolerance:
        raise SignatureRejected(f"the signature is older than {tolerance} seconds", code="timestamp_too_old")
    if timestamp > now + skew:
        raise SignatureRejected(f"the signature is more than {skew} seconds in the future", code="timestamp_in_future")


def mismatch() -> SignatureRejected:
    """The one refusal for a signature that no configured secret produced."""
    return SignatureRejected("no configured secret produced this signature", code="signature_mismatch")


def missing(what: str) -> SignatureRejected:
    """The refusal for a request that carries no signature at all."""
    return SignatureRejected(f"the request carries no {what} header", code="signature_missing")
