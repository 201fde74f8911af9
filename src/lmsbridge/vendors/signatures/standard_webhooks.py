"""Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

``v1,<base64>`` is HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed by the base64 part of a
``whsec_`` secret; ``v1a,<base64>`` is an ed25519 signature of the same string, checked
with a ``whpk_`` public key (raw 32 bytes, base64). The signature header may list several
signatures; any one that any configured secret or key verifies accepts.

Refusals: no ``webhook-signature`` -> 401 ``signature_missing``; no ``webhook-id`` or
``webhook-timestamp`` -> 400 ``header_missing``; an unreadable timestamp or signature list
-> 400 ``header_invalid``; stale or future timestamps -> 401 ``timestamp_too_old`` /
``timestamp_in_future``; no match -> 401 ``signature_mismatch``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lmsbridge.errors import ConfigError, MalformedRequest
from lmsbridge.vendors.signatures.base import Verified, check_timestamp, header, mismatch, missing, parse_timestamp

MAX_SIGNATURES = 16


def _b64(value: str, prefix: str) -> bytes:
    try:
        return base64.b64decode(value.removeprefix(prefix), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"a {prefix}... secret is not valid base64") from None


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    """The bytes every Standard Webhooks signature covers."""
    return f"{message_id}.{timestamp}.".encode() + body


class StandardWebhooksVerifier:
    """Verifies ``v1`` (HMAC) and ``v1a`` (ed25519) signatures against several secrets and keys."""

    def __init__(self, secrets: Sequence[str], *, tolerance: int = 300, skew: int = 30) -> None:
        self._hmac: list[tuple[int, bytes]] = []
        self._ed: list[tuple[int, Ed25519PublicKey]] = []
        for index, secret in enumerate(secrets):
            if secret.startswith("whpk_"):
                self._ed.append((index, Ed25519PublicKey.from_public_bytes(_b64(secret, "whpk_"))))
            else:
                self._hmac.append((index, _b64(secret, "whsec_")))
        self._tolerance = tolerance
        self._skew = skew

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; returns the message id and which secret matched."""
        signatures = header(headers, "webhook-signature")
        if not signatures:
            raise missing("webhook-signature")
        message_id = header(headers, "webhook-id")
        raw_ts = header(headers, "webhook-timestamp")
        if not message_id or raw_ts is None:
            raise MalformedRequest("webhook-id and webhook-timestamp are required", code="header_missing")
        if len(message_id) > 255:
            raise MalformedRequest("webhook-id is longer than 255 characters", code="header_invalid")
        timestamp = parse_timestamp(raw_ts)
        check_timestamp(timestamp, now, tolerance=self._tolerance, skew=self._skew)
        content = signed_content(message_id, timestamp, body)
        parts = signatures.split()
        if len(parts) > MAX_SIGNATURES:
            raise MalformedRequest("too many signatures", code="header_invalid")
        for part in parts:
            version, _, value = part.partition(",")
            try:
                given = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if version == "v1":
                for index, key in self._hmac:
                    if hmac.compare_digest(hmac.new(key, content, hashlib.sha256).digest(), given):
                        return Verified(message_id, index, timestamp)
            elif version == "v1a":
                for index, public in self._ed:
                    try:
                        public.verify(given, content)
                    except InvalidSignature:
                        continue
                    return Verified(message_id, index, timestamp)
        raise mismatch()


class StandardWebhooksSigner:
    """Signs like a Standard Webhooks sender: ``v1`` with ``whsec_``, ``v1a`` with ``whsk_`` (ed25519 seed)."""

    def __init__(self, secret: str) -> None:
        self._ed: Ed25519PrivateKey | None = None
        self._key = b""
        if secret.startswith("whsk_"):
            self._ed = Ed25519PrivateKey.from_private_bytes(_b64(secret, "whsk_"))
        else:
            self._key = _b64(secret, "whsec_")

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The three Standard Webhooks headers for ``body``."""
        content = signed_content(message_id, timestamp, body)
        if self._ed is not None:
            signature = "v1a," + base64.b64encode(self._ed.sign(content)).decode()
        else:
            signature = "v1," + base64.b64encode(hmac.new(self._key, content, hashlib.sha256).digest()).decode()
        return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def public_key_of(private: str) -> str:
    """The ``whpk_`` public key that verifies what the ``whsk_`` private key signs."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(_b64(private, "whsk_")).public_key()
    return "whpk_" + base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
