"""Platform edges: signature schemes, body adapters (one module per platform), platform APIs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import UnusableBody
from lmsbridge.vendors import exec as exec_platform
from lmsbridge.vendors import limeplate
from lmsbridge.vendors.envelope import HANDLED, Envelope, load_json, validate
from lmsbridge.vendors.limeplate_api import LimeplateApi
from lmsbridge.vendors.signatures import Signer, Verified, Verifier, build_signer, build_verifier

_ADAPTERS = {"limeplate": limeplate.to_event, "exec": exec_platform.to_event}


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event type lmsbridge does not handle: acknowledged, counted, not queued."""

    type: str
    message_id: str


def parse_event(
    platform: str, body: bytes, *, source: str, message_id: str | None, received_at: datetime, correlation_id: str
) -> AssignmentEvent | Ignored:
    """Turn a verified body into a canonical event (or :class:`Ignored`); 400/422 when it cannot."""
    adapter = _ADAPTERS.get(platform)
    if adapter is None:
        raise ValueError(f"unknown platform {platform!r}")
    envelope = validate(Envelope, load_json(body))
    mid = message_id or envelope.id
    if not mid:
        raise UnusableBody("id: the body needs an id when the signature scheme carries none", path="id")
    if envelope.type not in HANDLED:
        return Ignored(envelope.type, mid)
    return adapter(envelope, message_id=mid, source=source, received_at=received_at, correlation_id=correlation_id)


__all__ = [
    "Ignored",
    "LimeplateApi",
    "Signer",
    "Verified",
    "Verifier",
    "build_signer",
    "build_verifier",
    "parse_event",
]
