"""Stripe-style signatures: one header ``t=<unix>,v1=<hex>[,v1=<hex>...]``.

HMAC-SHA256 over ``{t}.{body}`` keyed by the secret string as it is. The header name is
configurable (default ``Limeplate-Signature``); the scheme carries no message id, so it
comes from the body's ``id``. Items other than ``t`` and ``v1`` (e.g. ``v0``) are ignored,
as are ``v1`` values that are not 64 hex digits (they cannot match).

Refusals: header absent or blank -> 401 ``signature_missing`` (the header is the whole
scheme, so "absent" means "unsigned"); no ``t``, more than one ``t``, no ``v1``, more than
16 ``v1`` or a ``t`` that is not unix seconds -> 400 ``header_invalid``; stale or future
``t`` -> 401 ``timestamp_too_old`` / ``timestamp_in_future``; no match -> 401
``signature_mismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from lmsbridge.errors import MalformedRequest
from lmsbridge.vendors.signatures.base import (
    MAX_SIGNATURES,
    Verified,
    check_timestamp,
    hex_digest,
    mismatch,
    parse_timestamp,
    secret_bytes,
    signature_header,
)

DEFAULT_HEADER = "Limeplate-Signature"


def _mac(secret: bytes, timestamp: int, body: bytes) -> bytes:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).digest()


class StripeVerifier:
    """Verifies ``t=...,v1=...`` headers against several secrets."""

    def __init__(
        self, secrets: Sequence[str], *, header_name: str | None = None, tolerance: int = 300, skew: int = 30
    ) -> None:
        self._secrets = [secret_bytes(s, "stripe") for s in secrets]
        self._header = header_name or DEFAULT_HEADER
        self._tolerance = tolerance
        self._skew = skew

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; the message id is left to the body's ``id``."""
        value = signature_header(headers, self._header)
        stamps: list[str] = []
        signatures: list[str] = []
        for item in value.split(","):
            key, _, val = item.strip().partition("=")
            if key == "t":
                stamps.append(val)
            elif key == "v1":
                signatures.append(val)
        if len(stamps) != 1 or not signatures or len(signatures) > MAX_SIGNATURES:
            raise MalformedRequest(
                f"{self._header} needs one t= and at most {MAX_SIGNATURES} v1=", code="header_invalid"
            )
        timestamp = parse_timestamp(stamps[0])
        check_timestamp(timestamp, now, tolerance=self._tolerance, skew=self._skew)
        candidates = [mac for mac in map(hex_digest, signatures) if mac is not None]
        for index, secret in enumerate(self._secrets):
            expected = _mac(secret, timestamp, body)
            if any(hmac.compare_digest(expected, given) for given in candidates):
                return Verified(None, index, timestamp)
        raise mismatch()


class StripeSigner:
    """Signs like a Stripe-style sender."""

    def __init__(self, secret: str, *, header_name: str | None = None) -> None:
        self._secret = secret_bytes(secret, "stripe")
        self._header = header_name or DEFAULT_HEADER

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The signature header for ``body`` (the message id travels in the body)."""
        return {self._header: f"t={timestamp},v1={_mac(self._secret, timestamp, body).hex()}"}
