"""Stripe-style signatures: one header ``t=<unix>,v1=<hex>[,v1=<hex>...]``.

HMAC-SHA256 over ``{t}.{body}`` keyed by the secret string as it is. The header name is
configurable (default ``Limeplate-Signature``); the message id comes from the body's ``id``.

Refusals: header absent -> 401 ``signature_missing``; no ``t`` or no ``v1`` -> 400
``header_invalid``; stale or future ``t`` -> 401; no match -> 401 ``signature_mismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from lmsbridge.errors import MalformedRequest
from lmsbridge.vendors.signatures.base import Verified, check_timestamp, header, mismatch, missing, parse_timestamp

DEFAULT_HEADER = "Limeplate-Signature"


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class StripeVerifier:
    """Verifies ``t=...,v1=...`` headers against several secrets."""

    def __init__(
        self, secrets: Sequence[str], *, header_name: str | None = None, tolerance: int = 300, skew: int = 30
    ) -> None:
        self._secrets = [s.encode() for s in secrets]
        self._header = header_name or DEFAULT_HEADER
        self._tolerance = tolerance
        self._skew = skew

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; the message id is left to the body's ``id``."""
        value = header(headers, self._header)
        if not value:
            raise missing(self._header)
        raw_ts: str | None = None
        candidates: list[str] = []
        for item in value.split(","):
            key, _, val = item.strip().partition("=")
            if key == "t":
                raw_ts = val
            elif key == "v1":
                candidates.append(val.strip().lower())
        if raw_ts is None or not candidates or len(candidates) > 16:
            raise MalformedRequest(f"{self._header} needs t= and v1=", code="header_invalid")
        timestamp = parse_timestamp(raw_ts)
        check_timestamp(timestamp, now, tolerance=self._tolerance, skew=self._skew)
        for index, secret in enumerate(self._secrets):
            expected = _mac(secret, timestamp, body)
            if any(hmac.compare_digest(expected, c) for c in candidates):
                return Verified(None, index, timestamp)
        raise mismatch()


class StripeSigner:
    """Signs like a Stripe-style sender."""

    def __init__(self, secret: str, *, header_name: str | None = None) -> None:
        self._secret = secret.encode()
        self._header = header_name or DEFAULT_HEADER

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The signature header for ``body`` (the message id travels in the body)."""
        return {self._header: f"t={timestamp},v1={_mac(self._secret, timestamp, body)}"}
