"""Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

``v1,<base64>`` is HMAC-SHA256 over ``{id}.{timestamp}.{body}`` keyed by the base64 part of a
``whsec_`` secret; ``v1a,<base64>`` is an ed25519 signature of the same string, checked
with a ``whpk_`` public key (raw 32 bytes, base64). The signature header may list several
space-separated signatures; any one that any configured secret or key verifies accepts.
Entries of another version, or whose value is not base64, are skipped (they cannot match).

Refusals, checked in this order:

* no (or a blank) ``webhook-signature`` -> 401 ``signature_missing``;
* no ``webhook-id`` or ``webhook-timestamp`` -> 400 ``header_missing`` (the request claims
  to be signed but is not a Standard Webhooks request: a client bug, not an attacker);
* a timestamp that is not unix seconds, a ``webhook-id`` over 255 characters or with
  unprintable characters, more than 16 signatures -> 400 ``header_invalid``;
* a timestamp older than the tolerance or further ahead than the skew -> 401
  ``timestamp_too_old`` / ``timestamp_in_future``;
* no signature matches -> 401 ``signature_mismatch``.

Secrets and keys are checked when the verifier is built: a ``whsec_``/``whpk_`` value that is
not base64 (padding may be omitted, as the reference library allows), an empty secret or a
key of the wrong length is a :class:`~lmsbridge.errors.ConfigError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lmsbridge.errors import ConfigError, MalformedRequest
from lmsbridge.vendors.signatures.base import (
    MAX_SIGNATURES,
    Verified,
    check_timestamp,
    header,
    message_id,
    mismatch,
    parse_timestamp,
    signature_header,
)

ID, TIMESTAMP, SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"
_HMAC_SIZE, _ED25519_KEY_SIZE, _ED25519_SIGNATURE_SIZE = 32, 32, 64


def _key(value: str, prefix: str, *, size: int | None = None) -> bytes:
    """The bytes of a ``whsec_``/``whpk_``/``whsk_`` value; never echoes the value."""
    encoded = value.removeprefix(prefix)
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"standard-webhooks: a {prefix}... value is not valid base64") from None
    if not raw:
        raise ConfigError(f"standard-webhooks: a {prefix}... value is empty")
    if size is not None and len(raw) != size:
        raise ConfigError(f"standard-webhooks: a {prefix}... key must be {size} bytes")
    return raw


def _decode(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    """The bytes every Standard Webhooks signature covers."""
    return f"{message_id}.{timestamp}.".encode() + body


class StandardWebhooksVerifier:
    """Verifies ``v1`` (HMAC) and ``v1a`` (ed25519) signatures against several secrets and keys."""

    def __init__(self, secrets: Sequence[str], *, tolerance: int = 300, skew: int = 30) -> None:
        self._hmac: list[tuple[int, bytes]] = []
        self._ed: list[tuple[int, Ed25519PublicKey]] = []
        for index, secret in enumerate(secrets):
            if secret.startswith("whsk_"):
                raise ConfigError("standard-webhooks: configure the whpk_ public key, not the whsk_ private key")
            if secret.startswith("whpk_"):
                raw = _key(secret, "whpk_", size=_ED25519_KEY_SIZE)
                self._ed.append((index, Ed25519PublicKey.from_public_bytes(raw)))
            else:
                self._hmac.append((index, _key(secret, "whsec_")))
        self._tolerance = tolerance
        self._skew = skew

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> Verified:
        """Verify the raw ``body``; returns the message id, the signed timestamp and which secret matched."""
        signatures = signature_header(headers, SIGNATURE)
        raw_id, raw_ts = header(headers, ID), header(headers, TIMESTAMP)
        if not raw_id or raw_ts is None:
            raise MalformedRequest(f"{ID} and {TIMESTAMP} are required", code="header_missing")
        mid = message_id(raw_id, ID)
        timestamp = parse_timestamp(raw_ts)
        parts = signatures.split()
        if len(parts) > MAX_SIGNATURES:
            raise MalformedRequest(f"{SIGNATURE} lists more than {MAX_SIGNATURES} signatures", code="header_invalid")
        check_timestamp(timestamp, now, tolerance=self._tolerance, skew=self._skew)
        content = signed_content(mid, timestamp, body)
        for part in parts:
            version, _, value = part.partition(",")
            given = _decode(value)
            if given is None:
                continue
            if version == "v1" and len(given) == _HMAC_SIZE:
                for index, key in self._hmac:
                    if hmac.compare_digest(hmac.new(key, content, hashlib.sha256).digest(), given):
                        return Verified(mid, index, timestamp)
            elif version == "v1a" and len(given) == _ED25519_SIGNATURE_SIZE:
                for index, public in self._ed:
                    try:
                        public.verify(given, content)
                    except InvalidSignature:
                        continue
                    return Verified(mid, index, timestamp)
        raise mismatch()


class StandardWebhooksSigner:
    """Signs like a Standard Webhooks sender: ``v1`` with ``whsec_``, ``v1a`` with ``whsk_`` (ed25519 seed)."""

    def __init__(self, secret: str) -> None:
        self._ed: Ed25519PrivateKey | None = None
        self._key = b""
        if secret.startswith("whsk_"):
            self._ed = Ed25519PrivateKey.from_private_bytes(_key(secret, "whsk_", size=_ED25519_KEY_SIZE))
        else:
            self._key = _key(secret, "whsec_")

    def sign(self, body: bytes, *, message_id: str, timestamp: int) -> dict[str, str]:
        """The three Standard Webhooks headers for ``body``."""
        content = signed_content(message_id, timestamp, body)
        if self._ed is not None:
            signature = "v1a," + base64.b64encode(self._ed.sign(content)).decode()
        else:
            signature = "v1," + base64.b64encode(hmac.new(self._key, content, hashlib.sha256).digest()).decode()
        return {ID: message_id, TIMESTAMP: str(timestamp), SIGNATURE: signature}


def public_key_of(private: str) -> str:
    """The ``whpk_`` public key that verifies what the ``whsk_`` private key signs."""
    key = Ed25519PrivateKey.from_private_bytes(_key(private, "whsk_", size=_ED25519_KEY_SIZE)).public_key()
    return "whpk_" + base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
