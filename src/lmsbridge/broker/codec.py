"""Message codec: canonical events and sync tasks to AMQP messages and back.

Handlers never see aio-pika types: :func:`decode` turns a delivery into a :class:`Task`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import DeadLetter

KIND = "x-lmsbridge-kind"
ATTEMPT = "x-lmsbridge-attempt"
RECEIVED = "x-lmsbridge-received-at"
SOURCE = "x-lmsbridge-source"
ACCOUNT = "x-lmsbridge-account"
REASON = "x-lmsbridge-reason"
ERROR = "x-lmsbridge-error"
ROUTING_KEY = "x-lmsbridge-routing-key"
REPLAYED = "x-lmsbridge-replayed"

Kind = Literal["event", "sync"]


@dataclass(frozen=True, slots=True)
class SyncTask:
    """Bring one record up to date on one StackOne account."""

    record_id: int
    account: str


@dataclass(frozen=True, slots=True)
class Task:
    """A decoded delivery: an event to ingest, or a sync task."""

    kind: Kind
    message_id: str
    correlation_id: str
    attempt: int
    received_at: float
    routing_key: str
    event: AssignmentEvent | None = None
    sync: SyncTask | None = None
    replayed: bool = False  # an operator sent it back from the dead-letter queue

    @property
    def account(self) -> str | None:
        """The StackOne account a sync task is for."""
        return self.sync.account if self.sync else None


def header_str(headers: Mapping[str, Any], key: str) -> str:
    """A header as text ('' when absent); AMQP may hand strings over as bytes."""
    value = headers.get(key)
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def header_num(headers: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    """A numeric header (``default`` when absent or unreadable)."""
    try:
        return float(header_str(headers, key) or default)
    except ValueError:
        return default


def _message(body: bytes, *, message_id: str, correlation_id: str, headers: dict[str, Any]) -> Message:
    return Message(
        body,
        message_id=message_id,
        correlation_id=correlation_id,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        headers=headers,
        timestamp=int(time.time()),
    )


def encode_event(event: AssignmentEvent) -> Message:
    """The persistent message carrying an accepted event."""
    return _message(
        event.model_dump_json().encode(),
        message_id=event.message_id,
        correlation_id=event.correlation_id,
        headers={
            KIND: "event",
            ATTEMPT: 0,
            RECEIVED: event.received_at.timestamp(),
            SOURCE: event.source,
        },
    )


def encode_sync(
    task: SyncTask,
    *,
    correlation_id: str,
    received_at: float,
    attempt: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Message:
    """The persistent message asking a worker to sync one record on one account."""
    return _message(
        orjson.dumps({"record_id": task.record_id, "account": task.account}),
        message_id=f"sync:{task.record_id}:{task.account}",
        correlation_id=correlation_id,
        headers={KIND: "sync", ATTEMPT: attempt, RECEIVED: received_at, ACCOUNT: task.account, **(extra or {})},
    )


def dead_sync(
    task: SyncTask, *, correlation_id: str, received_at: float, attempt: int, reason: str, error: str, routing_key: str
) -> Message:
    """A sync task for the dead-letter queue, recording why (a sync that failed where it was first tried)."""
    extra = {REASON: reason, ERROR: error[:1000], ROUTING_KEY: routing_key}
    return encode_sync(task, correlation_id=correlation_id, received_at=received_at, attempt=attempt, extra=extra)


def decode(message: AbstractIncomingMessage) -> Task:
    """Turn a delivery into a :class:`Task`; a message we cannot read is poison (dead-letter)."""
    headers = message.headers or {}
    kind = header_str(headers, KIND)
    try:
        attempt = int(header_num(headers, ATTEMPT))
        received = header_num(headers, RECEIVED, time.time())
        common: dict[str, Any] = {
            "message_id": message.message_id or "",
            "correlation_id": message.correlation_id or message.message_id or "",
            "attempt": attempt,
            "received_at": received,
            "routing_key": message.routing_key or "",
            "replayed": bool(header_num(headers, REPLAYED)),
        }
        if kind == "event":
            return Task(kind="event", event=AssignmentEvent.model_validate_json(message.body), **common)
        if kind == "sync":
            data = orjson.loads(message.body)
            return Task(kind="sync", sync=SyncTask(int(data["record_id"]), str(data["account"])), **common)
    except (ValidationError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DeadLetter("poison_message", f"undecodable {kind or 'unknown'} message: {type(exc).__name__}") from exc
    raise DeadLetter("poison_message", f"unknown message kind {kind!r}")


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> Message:
    return Message(
        message.body,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        headers=headers,
        timestamp=message.timestamp,
    )


def retried(message: AbstractIncomingMessage, *, attempt: int, delay_header: str, level: int) -> Message:
    """A copy of ``message`` for a delay queue, with its attempt count and delay level set."""
    return _copy(message, {**(message.headers or {}), ATTEMPT: attempt, delay_header: level})


def dead(message: AbstractIncomingMessage, *, reason: str, error: str) -> Message:
    """A copy of ``message`` for the dead-letter queue, recording why it is there."""
    headers = {**(message.headers or {}), REASON: reason, ERROR: error[:1000], ROUTING_KEY: message.routing_key or ""}
    return _copy(message, headers)
