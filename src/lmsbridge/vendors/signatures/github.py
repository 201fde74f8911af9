"""GitHub-style signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

No timestamp is signed, so replay protection rests on the message id: it comes from a
configured delivery header (e.g. ``X-GitHub-Delivery``) or, failing that, the body's ``id``.

Refusals: header absent -> 401 ``signature_missing``; not ``sha256=<hex>`` -> 400
``header_invalid``; no match -> 401 ``signature_mismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from lmsbridge.errors import MalformedRequest
from lmsbridge.vendors.signatures.base import Verified, header, mismatch, missing

HEADER = "X-Hub-Signature-256"


class GitHubVerifier:
    """Verifies ``sha256=`` body signatures against several secrets."""

    def __init__(self, secrets: Sequence[str], *, delivery_header: str | None = None) -> None:
        self._secrets = [s.encode() for s in secrets]
        self._delivery = delivery_header

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; the message id is the delivery header when present."""
        value = header(headers, HEADER)
        if not value:
            raise missing(HEADER)
        algorithm, _, given = value.partition("=")
        if algorithm != "sha256" or len(given) != 64:
            raise MalformedRequest(f"{HEADER} must be sha256=<hex>", code="header_invalid")
        for index, secret in enumerate(self._secrets):
            if hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).hexdigest(), given.lower()):
                delivery = header(headers, self._delivery) if self._delivery else None
                return Verified(delivery[:255] if delivery else None, index, None)
        raise mismatch()


class GitHubSigner:
    """Signs like GitHub, and sends the message id in the delivery header when one is named."""

    def __init__(self, secret: str, *, delivery_header: str | None = None) -> None:
        self._secret = secret.encode()
        self._delivery = delivery_header

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The signature header (and delivery header) for ``body``."""
        headers = {HEADER: "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()}
        if self._delivery:
            headers[self._delivery] = message_id
        return headers
