"""Message codec: canonical events and sync tasks to AMQP messages and back.

Handlers never see aio-pika types: :func:`decode` turns a delivery into a :class:`Job`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage
from pamqp import common, encode
from pamqp.commands import Basic
from pydantic import ValidationError

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import DeadLetter
from lmsbridge.lanes import BACKGROUND_HEADER

KIND = "x-lmsbridge-kind"
ATTEMPT = "x-lmsbridge-attempt"  # tries counted by the retry policy (an infrastructure fault uses none)
TRIES = "x-lmsbridge-tries"  # every earlier try, whatever ended it: the ``attempt`` log lines carry
RECEIVED = "x-lmsbridge-received-at"
SOURCE = "x-lmsbridge-source"
ACCOUNT = "x-lmsbridge-account"
REASON = "x-lmsbridge-reason"
ERROR = "x-lmsbridge-error"
ROUTING_KEY = "x-lmsbridge-routing-key"
REPLAYED = "x-lmsbridge-replayed"
FAILING_SINCE = "x-lmsbridge-failing-since"  # epoch seconds of the first transient failure in a row
DELIVERY_COUNT = "x-delivery-count"  # set by quorum queues on a redelivery

Kind = Literal["event", "sync"]


@dataclass(frozen=True, slots=True)
class SyncTask:
    """Bring one record up to date on one StackOne account."""

    record_id: int
    account: str


@dataclass(frozen=True, slots=True)
class Job:
    """A decoded delivery: an event to ingest, or a sync task (named so as not to read as asyncio's Task)."""

    kind: Kind
    message_id: str
    correlation_id: str
    attempt: int
    received_at: float
    routing_key: str
    event: AssignmentEvent | None = None
    sync: SyncTask | None = None
    replayed: bool = False  # an operator sent it back from the dead-letter queue
    failing_since: float | None = None  # first transient failure of the failures in a row, if failing
    delivery_count: int = 0  # how often the broker delivered it before (requeues, crashed consumers)
    background: bool = False  # reconciliation's work: served after live work (lmsbridge.lanes)
    tries: int = 0  # earlier tries of every kind, broker redeliveries included (logged as ``attempt``)

    def syncing(self, sync: SyncTask) -> Job:
        """The sync job of one of this event's records, synced where the event was stored (first attempt)."""
        return Job(
            kind="sync",
            message_id=f"sync:{sync.record_id}:{sync.account}",
            correlation_id=self.correlation_id,
            attempt=0,
            received_at=self.received_at,
            routing_key="",
            sync=sync,
            background=self.background,
        )


def header_str(headers: Mapping[str, Any], key: str) -> str:
    """A header as text ('' when absent); AMQP may hand strings over as bytes."""
    value = headers.get(key)
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def header_num(headers: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    """A numeric header (``default`` when absent, unreadable or not finite: ``inf`` and ``nan``
    would break every count and time made of it)."""
    try:
        value = float(header_str(headers, key) or default)
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def instant(seconds: float) -> str:
    """An epoch time as a header value. Text, not a float: AMQP tables may carry floats in 32 bits,
    which at today's epoch is a minute's precision."""
    return f"{seconds:.3f}"


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


class _Wired(Basic.Properties):
    """Properties whose wire form the encoder made whole: pamqp's ``marshal`` (~18 us a message,
    its headers table encoded key by key) is skipped. The attributes are set as usual (aiormq reads
    the message id); ``Basic.Properties.marshal(self)`` still gives the same bytes (a test checks)."""

    wire: bytes

    def marshal(self) -> bytes:
        return self.wire


_SHORT = encode.short_string
_LONG = encode.long_string
_TABLE_SIZE = common.Struct.integer
_SECONDS = common.Struct.timestamp
_PRESENT = common.Struct.ushort.pack(
    sum(
        Basic.Properties.flags[name]
        for name in ("content_type", "headers", "delivery_mode", "correlation_id", "message_id", "timestamp")
    ),
)
_JSON = _SHORT("application/json")
_PERSISTENT = encode.octet(DeliveryMode.PERSISTENT.value)
_RECEIVED_KEY = _SHORT(RECEIVED) + b"S"


def _entries(headers: Mapping[str, Any]) -> bytes:
    """Table entries as pamqp encodes them (keys in sorted order)."""
    return b"".join(_SHORT(key) + encode.encode_table_value(value) for key, value in sorted(headers.items()))


class EventEncoder:
    """Accepted events of one source as the body and AMQP properties of persistent messages.

    The receiver's hot path: it publishes through aiormq directly, so no aio-pika ``Message`` is
    built per event, and what every event of the source shares (kind, attempt, source) is built
    once, down to its bytes in the headers table: only the receiving time, the ids and the
    timestamp are encoded per event. What :func:`decode` reads back is the same as for any other message.
    """

    def __init__(self, source: str) -> None:
        self._headers: dict[str, Any] = {KIND: "event", ATTEMPT: 0, SOURCE: source}
        self._background: dict[str, Any] = {**self._headers, BACKGROUND_HEADER: 1}
        # The table's entries around the receiving time's (pamqp sorts the keys), per lane.
        self._around = {
            lane: self._split(headers) for lane, headers in ((False, self._headers), (True, self._background))
        }

    @staticmethod
    def _split(headers: Mapping[str, Any]) -> tuple[bytes, bytes]:
        before = {k: v for k, v in headers.items() if k < RECEIVED}
        after = {k: v for k, v in headers.items() if k > RECEIVED}
        return _entries(before), _entries(after)

    def encode(self, event: AssignmentEvent, *, background: bool = False) -> tuple[bytes, Basic.Properties]:
        """``(body, properties)`` of the message carrying ``event`` (marked for the background lane if asked)."""
        received = event.received_at.timestamp()
        stamp, seconds = instant(received), int(received)
        message_id, correlation_id = event.message_id, event.correlation_id
        # pamqp leaves an empty id out of the wire form: such a message is marshalled by pamqp itself.
        kind = _Wired if message_id and correlation_id else Basic.Properties
        properties = kind(
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT.value,
            message_id=message_id,
            correlation_id=correlation_id,
            headers={**(self._background if background else self._headers), RECEIVED: stamp},
            timestamp=datetime.fromtimestamp(seconds, UTC),
        )
        if isinstance(properties, _Wired):
            before, after = self._around[background]
            table = b"".join((before, _RECEIVED_KEY, _LONG(stamp), after))
            properties.wire = b"".join(
                (
                    _PRESENT,
                    _JSON,
                    _TABLE_SIZE.pack(len(table)),
                    table,
                    _PERSISTENT,
                    _SHORT(correlation_id),
                    _SHORT(message_id),
                    _SECONDS.pack(seconds),
                )
            )
        return event.__pydantic_serializer__.to_json(event), properties


def encode_sync(
    task: SyncTask,
    *,
    correlation_id: str,
    received_at: float,
    attempt: int = 0,
    failing_since: float | None = None,
    extra: Mapping[str, Any] | None = None,
    background: bool = False,
    tries: int = 0,
) -> Message:
    """The persistent message asking a worker to sync one record on one account (``tries``: its
    earlier tries, when it is published again after one)."""
    headers: dict[str, Any] = {KIND: "sync", ATTEMPT: attempt, RECEIVED: instant(received_at), ACCOUNT: task.account}
    if tries:
        headers[TRIES] = tries
    if background:
        headers[BACKGROUND_HEADER] = 1
    if failing_since is not None:
        headers[FAILING_SINCE] = instant(failing_since)
    return _message(
        orjson.dumps({"record_id": task.record_id, "account": task.account}),
        message_id=f"sync:{task.record_id}:{task.account}",
        correlation_id=correlation_id,
        headers={**headers, **(extra or {})},
    )


def dead_sync(
    task: SyncTask,
    *,
    correlation_id: str,
    received_at: float,
    attempt: int,
    reason: str,
    error: str,
    routing_key: str,
    tries: int = 0,
) -> Message:
    """A sync task for the dead-letter queue, recording why and how often it was tried (``tries``,
    the last try included)."""
    extra = {REASON: reason, ERROR: error[:1000], ROUTING_KEY: routing_key}
    return encode_sync(
        task, correlation_id=correlation_id, received_at=received_at, attempt=attempt, extra=extra, tries=tries
    )


def tries(message: AbstractIncomingMessage) -> int:
    """Earlier tries of ``message``: those its retries counted (``attempt`` for a copy made before
    they were), and the broker's redeliveries since (a requeue, a consumer gone: quorum queues count
    them, classic ones only flag one)."""
    headers = message.headers or {}
    counted = int(header_num(headers, TRIES, header_num(headers, ATTEMPT)))
    return counted + (int(header_num(headers, DELIVERY_COUNT)) or int(bool(message.redelivered)))


def decode(message: AbstractIncomingMessage) -> Job:
    """Turn a delivery into a :class:`Job`; a message we cannot read is poison (dead-letter)."""
    headers = message.headers or {}
    kind = header_str(headers, KIND)
    try:
        attempt = int(header_num(headers, ATTEMPT))
        received = header_num(headers, RECEIVED, time.time())
        since = header_num(headers, FAILING_SINCE, 0.0)
        common: dict[str, Any] = {
            "message_id": message.message_id or "",
            "correlation_id": message.correlation_id or message.message_id or "",
            "attempt": attempt,
            "received_at": received,
            "routing_key": message.routing_key or "",
            "replayed": bool(header_num(headers, REPLAYED)),
            "failing_since": since or None,
            "delivery_count": int(header_num(headers, DELIVERY_COUNT)),
            "background": bool(header_num(headers, BACKGROUND_HEADER)),
            "tries": tries(message),
        }
        if kind == "event":
            return Job(kind="event", event=AssignmentEvent.model_validate_json(message.body), **common)
        if kind == "sync":
            data = orjson.loads(message.body)
            return Job(kind="sync", sync=SyncTask(int(data["record_id"]), str(data["account"])), **common)
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


def retried(
    message: AbstractIncomingMessage, *, attempt: int, delay_header: str, level: int, failing_since: float | None = None
) -> Message:
    """A copy of ``message`` for a delay queue, with its attempt count, tries (one more), delay level
    and first failure set."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in (FAILING_SINCE, DELIVERY_COUNT)}
    headers.update({ATTEMPT: attempt, TRIES: tries(message) + 1, delay_header: level})
    if failing_since is not None:
        headers[FAILING_SINCE] = instant(failing_since)
    return _copy(message, headers)


def dead(message: AbstractIncomingMessage, *, reason: str, error: str) -> Message:
    """A copy of ``message`` for the dead-letter queue, recording why it is there and how often it
    was tried (this delivery included: the ``attempt`` of its last log line, plus one)."""
    headers = {k: v for k, v in (message.headers or {}).items() if k != DELIVERY_COUNT}
    headers.update(
        {REASON: reason, ERROR: error[:1000], ROUTING_KEY: message.routing_key or "", TRIES: tries(message) + 1}
    )
    return _copy(message, headers)
