"""Platform edges: signature schemes, body adapters (one module per platform), platform APIs.

The receiver calls ``build_verifier(source).verify(...)`` on the raw body first, then
:func:`parse_event`; both raise :class:`~lmsbridge.errors.RejectRequest` subclasses only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import ValidationError

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import UnusableBody
from lmsbridge.vendors import exec as exec_platform
from lmsbridge.vendors import limeplate
from lmsbridge.vendors.envelope import HANDLED, Envelope, Head, load_json, validate
from lmsbridge.vendors.limeplate_api import LimeplateApi
from lmsbridge.vendors.signatures import Signer, Verified, Verifier, build_signer, build_verifier


class _Adapter(Protocol):
    def __call__(
        self, envelope: Envelope, *, message_id: str, source: str, received_at: datetime, correlation_id: str
    ) -> AssignmentEvent: ...


_ADAPTERS: dict[str, _Adapter] = {"limeplate": limeplate.to_event, "exec": exec_platform.to_event}


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event type lmsbridge does not handle: acknowledged (202), counted, not queued."""

    type: str
    message_id: str


def parse_event(
    platform: str, body: bytes, *, source: str, message_id: str | None, received_at: datetime, correlation_id: str
) -> AssignmentEvent | Ignored:
    """Turn a verified body into a canonical event, or :class:`Ignored` for a type lmsbridge does not handle.

    ``message_id`` is the scheme's (header) id when it carries one; otherwise the body's ``id``
    is used. Raises ``MalformedRequest`` (400 ``malformed_json``) for a body that is not a JSON
    object and ``UnusableBody`` (422 ``invalid_body``, with ``path``) for one lacking what is needed.
    """
    adapter = _ADAPTERS.get(platform)
    if adapter is None:
        raise ValueError(f"unknown platform {platform!r}")
    document = load_json(body)
    # One validation in the usual case (a well-formed envelope); only a body that fails it is
    # validated again as a bare head, so an ignored type is acknowledged however its rest looks.
    try:
        envelope: Envelope | None = Envelope.model_validate(document)
    except ValidationError:
        envelope = None
    head = envelope or validate(Head, document)
    mid = message_id or head.id
    if not mid:
        raise UnusableBody("id: the body needs an id when the signature scheme carries none", path="id")
    if head.type not in HANDLED:
        return Ignored(head.type, mid)
    if envelope is None:
        envelope = validate(Envelope, document)  # a 422 naming the first problem's path
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
