"""GitHub-style signatures: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``.

No timestamp is signed (``Verified.timestamp`` is ``None``), so replay protection rests on
the message id alone: it comes from the configured delivery header (e.g.
``X-GitHub-Delivery``) when the request carries it, else from the body's ``id``. The
delivery header is not signed; that is GitHub's design, and why the receiver remembers ids.

Refusals: header absent or blank -> 401 ``signature_missing``; not ``sha256=<64 hex>``, or a
delivery header over 255 characters or with unprintable characters -> 400
``header_invalid``; no match -> 401 ``signature_mismatch``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from lmsbridge.errors import MalformedRequest
from lmsbridge.vendors.signatures.base import (
    Verified,
    header,
    hex_digest,
    message_id,
    mismatch,
    secret_bytes,
    signature_header,
)

HEADER = "X-Hub-Signature-256"


class GitHubVerifier:
    """Verifies ``sha256=`` body signatures against several secrets."""

    def __init__(self, secrets: Sequence[str], *, delivery_header: str | None = None) -> None:
        self._secrets = [secret_bytes(s, "github") for s in secrets]
        self._delivery = delivery_header

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; the message id is the delivery header when present."""
        algorithm, _, value = signature_header(headers, HEADER).strip().partition("=")
        given = hex_digest(value) if algorithm == "sha256" else None
        if given is None:
            raise MalformedRequest(f"{HEADER} must be sha256=<64 hex digits>", code="header_invalid")
        for index, secret in enumerate(self._secrets):
            if hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), given):
                return Verified(self._message_id(headers), index, None)
        raise mismatch()

    def _message_id(self, headers: Mapping[str, str]) -> str | None:
        if self._delivery is None:
            return None
        delivery = header(headers, self._delivery)
        return message_id(delivery, self._delivery) if delivery else None


class GitHubSigner:
    """Signs like GitHub, and sends the message id in the delivery header when one is named."""

    def __init__(self, secret: str, *, delivery_header: str | None = None) -> None:
        self._secret = secret_bytes(secret, "github")
        self._delivery = delivery_header

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The signature header (and delivery header) for ``body``; ``timestamp`` is not signed."""
        headers = {HEADER: "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()}
        if self._delivery:
            headers[self._delivery] = message_id
        return headers
