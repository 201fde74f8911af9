"""The dead-letter queue, for operators: list, show, replay, purge.

Reading is non-destructive: messages are fetched unacknowledged and returned when the
channel closes. Replay republishes a message to the queue it came from (with its
attempts reset) and only then acks the dead copy; the consumer's inbox makes replaying
twice harmless.

This is the second place that acks, besides the consumer: an operator's tool on the
dead-letter queue only, which the consumers never read. It acks a dead copy only once its
replay is confirmed, so a failure leaves the dead letter where it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from lmsbridge.broker import codec
from lmsbridge.broker.topology import Names
from lmsbridge.errors import BrokerUnavailable


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A dead-lettered message as an operator sees it."""

    message_id: str
    reason: str
    error: str
    routing_key: str
    kind: str
    attempt: int
    body: str

    def summary(self) -> dict[str, Any]:
        """Everything but the body."""
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "error": self.error,
            "routing_key": self.routing_key,
            "kind": self.kind,
            "attempt": self.attempt,
        }


def _describe(message: AbstractIncomingMessage) -> DeadMessage:
    headers = message.headers or {}
    reason = codec.header_str(headers, codec.REASON)
    routing_key = codec.header_str(headers, codec.ROUTING_KEY)
    deaths = headers.get("x-death")
    if not reason and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        first: dict[str, Any] = deaths[0]
        reason = f"broker:{codec.header_str(first, 'reason')}"
        keys = first.get("routing-keys") or []
        routing_key = routing_key or (codec.header_str({"k": keys[0]}, "k") if keys else "")
    return DeadMessage(
        message_id=message.message_id or "",
        reason=reason or "unknown",
        error=codec.header_str(headers, codec.ERROR),
        routing_key=routing_key or message.routing_key or "",
        kind=codec.header_str(headers, codec.KIND),
        attempt=int(codec.header_num(headers, codec.ATTEMPT)),
        body=message.body.decode("utf-8", "replace"),
    )


class DeadLetters:
    """Operator access to ``{prefix}.dead``."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._names = Names(prefix)

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        try:
            connection = await aio_pika.connect(self._url, client_properties={"connection_name": "lmsbridge-dlq"})
        except Exception as exc:
            raise BrokerUnavailable(f"RabbitMQ is unreachable: {type(exc).__name__}") from None
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            yield channel

    async def _walk(self, channel: AbstractChannel, limit: int) -> list[AbstractIncomingMessage]:
        queue = await channel.get_queue(self._names.dead, ensure=True)
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
        return taken

    async def list(self, limit: int = 100) -> list[DeadMessage]:
        """Up to ``limit`` dead messages, oldest first (left in the queue)."""
        async with self._channel() as channel:
            return [_describe(m) for m in await self._walk(channel, limit)]

    async def show(self, message_id: str) -> DeadMessage | None:
        """One dead message by id (left in the queue)."""
        async with self._channel() as channel:
            for message in await self._walk(channel, 1_000_000):
                if message.message_id == message_id:
                    return _describe(message)
        return None

    async def replay(self, message_id: str | None) -> int:
        """Send one message (or all when ``message_id`` is None) back to its queue; returns how many."""
        replayed = 0
        async with self._channel() as channel:
            exchange = await channel.get_exchange(self._names.exchange)
            for message in await self._walk(channel, 1_000_000):
                if message_id is not None and message.message_id != message_id:
                    continue
                dead = _describe(message)
                headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEAD_HEADERS}
                headers[codec.ATTEMPT] = 0
                headers[codec.REPLAYED] = 1
                await exchange.publish(
                    aio_pika.Message(
                        message.body,
                        message_id=message.message_id,
                        correlation_id=message.correlation_id,
                        content_type=message.content_type,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        headers=headers,
                    ),
                    dead.routing_key,
                    mandatory=True,
                    timeout=10,
                )
                await message.ack()
                replayed += 1
        return replayed

    async def purge(self) -> int:
        """Delete every dead message; returns how many."""
        async with self._channel() as channel:
            queue = await channel.get_queue(self._names.dead, ensure=True)
            result = await queue.purge()
            return int(result.message_count or 0)


_DEAD_HEADERS = frozenset(
    {
        codec.REASON,
        codec.ERROR,
        codec.ROUTING_KEY,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
