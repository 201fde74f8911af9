"""The dead-letter queue, for operators: list, show, replay, purge.

Reading is non-destructive: messages are fetched unacknowledged and returned when the
channel closes. Replay republishes a message to the queue it came from (with its
attempts reset) and only then acks the dead copy; the consumer's inbox makes replaying
twice harmless.

Every walk covers the messages the queue held when it began, oldest first, and keeps none it
does not need: a dead letter that arrives meanwhile (a replayed message failing again, on an
account still broken) waits for the next walk instead of being chased. Walks consume the queue
rather than fetch one message at a time; ``replay --all`` takes a window of
:data:`REPLAY_WINDOW` messages, whose publishes are confirmed together, and acks as it goes.

This is the second place that acks, besides the consumer: an operator's tool on the
dead-letter queue only, which the consumers never read. It acks a dead copy only once its
replay is confirmed, so a failure leaves the dead letter where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import PublishError

from lmsbridge.broker import codec
from lmsbridge.broker.connection import connect_once
from lmsbridge.broker.topology import Names
from lmsbridge.errors import BrokerUnavailable


@dataclass(slots=True)
class Replayed:
    """What a replay did: how many dead letters went back to their queues, and how many stayed dead
    because no queue takes them any more, by the routing key they came with."""

    sent: int = 0
    unroutable: dict[str, int] = field(default_factory=dict)
    events: int = 0
    """Of ``sent``, the events (not sync tasks): back in an intake queue, the delivery ledger's ``requeued``."""
    passed_over: int = 0
    """Dead letters of another reason than the one asked for, left dead (at the queue's tail)."""


@dataclass(frozen=True, slots=True)
class _Exchanges:
    work: AbstractExchange  # where replayed messages go: their queue's routing key
    dead: AbstractExchange  # the dead-letter queue's fanout, for what no queue takes


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A dead-lettered message as an operator sees it."""

    message_id: str
    reason: str
    error: str
    routing_key: str
    kind: str
    attempt: int
    """Tries the retry policy counted (an infrastructure fault, a busy lease or a pause counts none)."""
    tries: int
    """Every try, the last included: one more than the ``attempt`` of the message's last log line."""
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
            "tries": self.tries,
        }


Consumer = tuple[AbstractQueue, str]
"""A walk's consumer: the queue and its tag (see :func:`_acks_applied`)."""
REPLAY_WINDOW = 200
"""Dead letters ``replay --all`` has in hand at a time: published together, each acked once confirmed."""
ACKS_APPLIED_SECONDS = 10.0
"""How long a replay waits for RabbitMQ to apply its acks before it closes (see :func:`_acks_applied`)."""
MAX_PREFETCH = 65535
"""AMQP's prefetch count is 16 bits."""
IDLE_SECONDS = 5.0
"""How long a walk waits for the next of the messages counted at its start (another tool may hold
the rest) before it stops."""


def _death(message: AbstractIncomingMessage) -> tuple[str, str]:
    """Why the message died and the routing key it came with (from RabbitMQ's ``x-death`` when
    the broker dead-lettered it, a delivery limit or an overflow, rather than lmsbridge)."""
    headers = message.headers or {}
    reason = codec.header_str(headers, codec.REASON)
    routing_key = codec.header_str(headers, codec.ROUTING_KEY)
    deaths = headers.get("x-death")
    if not reason and isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        first: dict[str, Any] = deaths[0]
        reason = f"broker:{codec.header_str(first, 'reason')}"
        keys = first.get("routing-keys") or []
        routing_key = routing_key or (codec.header_str({"k": keys[0]}, "k") if keys else "")
    return reason or "unknown", routing_key or message.routing_key or ""


def _describe(message: AbstractIncomingMessage) -> DeadMessage:
    headers = message.headers or {}
    reason, routing_key = _death(message)
    return DeadMessage(
        message_id=message.message_id or "",
        reason=reason,
        error=codec.header_str(headers, codec.ERROR),
        routing_key=routing_key,
        kind=codec.header_str(headers, codec.KIND),
        attempt=int(codec.header_num(headers, codec.ATTEMPT)),
        tries=int(codec.header_num(headers, codec.TRIES, codec.header_num(headers, codec.ATTEMPT))),
        body=message.body.decode("utf-8", "replace"),
    )


class DeadLetters:
    """Operator access to ``{prefix}.dead``."""

    def __init__(self, url: str, prefix: str, *, routes: Collection[str] | None = None) -> None:
        """``routes``: the routing keys some worker consumes (the settings' accounts and sources);
        a dead letter for any other stays dead on replay. ``None``: every key RabbitMQ routes."""
        self._url = url
        self._names = Names(prefix)
        self._routes = None if routes is None else frozenset(routes)
        self.held_elsewhere = 0
        """Consumers of the dead-letter queue other than this tool's, as its last command began: the
        dead letters they hold unacknowledged (another ``dlq`` command still running) are out of reach."""

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        try:
            connection = await connect_once(self._url, "lmsbridge-dlq")
        except BrokerUnavailable:
            raise
        except Exception as exc:
            raise BrokerUnavailable(f"RabbitMQ is unreachable: {type(exc).__name__}") from None
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            yield channel

    async def _queue(self, channel: AbstractChannel) -> tuple[AbstractQueue, int]:
        """The dead-letter queue (ChannelNotFoundEntity when it was never declared) and its ready messages."""
        queue = await channel.declare_queue(self._names.dead, passive=True)
        self.held_elsewhere = int(queue.declaration_result.consumer_count or 0)
        return queue, int(queue.declaration_result.message_count or 0)

    async def _walk(
        self, channel: AbstractChannel, limit: int | None = None, consumers: list[Consumer] | None = None
    ) -> AsyncGenerator[AbstractIncomingMessage, None]:
        """The messages the queue held as the walk began (at most ``limit``), oldest first, left
        unacknowledged: they go back to the queue when the channel closes.

        Consumed with a prefetch of all of them (nothing is acked, so the prefetch is what one
        consumer may hold), rather than fetched one ``basic.get`` at a time: 1.5 ms each, 30 s to
        find the last of 20,000, and a quorum queue takes back messages fetched that way in
        another order (consumed, they keep theirs). More than AMQP's largest prefetch are still
        fetched one at a time.
        """
        queue, ready = await self._queue(channel)
        left = ready if limit is None else min(limit, ready)
        if left > MAX_PREFETCH:
            while left > 0 and (fetched := await queue.get(no_ack=False, fail=False)) is not None:
                left -= 1
                yield fetched
            return
        if left <= 0:
            return
        await channel.set_qos(prefetch_count=left)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(arrived.put)  # cancelled as the channel closes, or by the caller
        if consumers is not None:
            consumers.append((queue, tag))
        while left > 0:
            try:
                message = await asyncio.wait_for(arrived.get(), IDLE_SECONDS)
            except TimeoutError:  # the rest is in another tool's hands
                return
            left -= 1
            yield message

    async def list(self, limit: int = 100, *, reason: str | None = None) -> list[DeadMessage]:
        """Up to ``limit`` dead messages, oldest first (left in the queue); with ``reason``, of those
        that died for it, found among all."""
        found: list[DeadMessage] = []
        async with self._channel() as channel:
            walk = self._walk(channel, limit if reason is None else None)
            async with contextlib.aclosing(walk):
                async for message in walk:
                    dead = _describe(message)
                    if reason is None or dead.reason == reason:
                        found.append(dead)
                    if len(found) >= limit:
                        break
        return found

    async def show(self, message_id: str) -> DeadMessage | None:
        """One dead message by id (left in the queue)."""
        async with self._channel() as channel:
            async for message in self._walk(channel):
                if message.message_id == message_id:
                    return _describe(message)
        return None

    async def replay(
        self, message_id: str | None, *, into: Replayed | None = None, reason: str | None = None
    ) -> Replayed:
        """Send one message (every dead copy with that id), or all when ``message_id`` is None, back to
        its queue. Each dead copy is acked only once its replay is confirmed; one no queue takes (an
        account or source no longer in the settings) is put back at the dead-letter queue's tail.

        ``into``: the tally, kept up to date as windows are confirmed, so a caller whose replay was
        stopped (Ctrl-C, RabbitMQ gone) can say how many went back before it stopped. ``reason``
        (with all): only the dead letters that died for it (as ``dlq list`` shows it) go back; the
        others stay dead, put back at the queue's tail."""
        replayed = Replayed() if into is None else into
        async with self._channel() as channel:
            exchanges = _Exchanges(
                await channel.get_exchange(self._names.exchange),
                await channel.get_exchange(self._names.dead_exchange),
            )
            if message_id is None:
                return await self._replay_all(channel, exchanges, replayed, reason)
            consumers: list[Consumer] = []
            matching = [m async for m in self._walk(channel, consumers=consumers) if m.message_id == message_id]
            await _send_back(exchanges, matching, replayed, self._routes)
            for queue, tag in consumers:
                await _acks_applied(queue, tag)
            return replayed

    async def _replay_all(
        self, channel: AbstractChannel, exchanges: _Exchanges, replayed: Replayed, reason: str | None
    ) -> Replayed:
        """Consume the messages the queue held at the start, a window at a time, and send each back
        (of ``reason`` only, when given)."""
        queue, ready = await self._queue(channel)
        if not ready:
            return replayed
        await channel.set_qos(prefetch_count=REPLAY_WINDOW)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        # Never cancelled: the channel's close ends it, and under a memory alarm RabbitMQ reads
        # nothing more from the connection, so a basic.cancel would wait for ever.
        tag = await queue.consume(arrived.put)
        taken = 0
        while taken < ready:
            try:
                batch = [await asyncio.wait_for(arrived.get(), IDLE_SECONDS)]
            except TimeoutError:  # the rest is in another tool's hands: what is left stays dead
                break
            while len(batch) < REPLAY_WINDOW and taken + len(batch) < ready and not arrived.empty():
                batch.append(arrived.get_nowait())
            taken += len(batch)
            await _send_back(exchanges, batch, replayed, self._routes, reason)
        await _acks_applied(queue, tag)
        return replayed

    async def purge(self) -> int:
        """Delete every dead message; returns how many."""
        async with self._channel() as channel:
            queue, _ = await self._queue(channel)
            result = await queue.purge()
            return int(result.message_count or 0)


async def _acks_applied(queue: AbstractQueue, tag: str) -> None:
    """Cancel the walk's consumer, which returns once the acks sent before it are applied.

    A quorum queue's channel may hold acks back while the queue is busy (dead letters arriving);
    closed at once after its last acks, it dropped them, and the replayed messages stayed in the
    dead-letter queue too (3 runs in 10 of 450 replayed with 30 dying meanwhile; none in 30 with
    this wait). The acks are applied before the consumer is cancelled.
    """
    await asyncio.wait_for(queue.cancel(tag), ACKS_APPLIED_SECONDS)


async def _send_back(
    exchanges: _Exchanges,
    batch: list[AbstractIncomingMessage],
    tally: Replayed,
    routes: frozenset[str] | None = None,
    reason: str | None = None,
) -> None:
    """Publish each message of ``batch`` to its queue, attempts reset, all at once; ack each dead copy
    whose publish was confirmed. One RabbitMQ could not route, or whose routing key is not in
    ``routes`` (a queue that still exists but that no worker consumes: its account or source left
    the settings), is published again, unchanged, to the dead-letter queue (its tail), and acked once
    that is confirmed: held unacked instead, a replay window of them stopped the queue from
    delivering the rest. So is one that died for another reason than ``reason``, when given. Each
    dead copy acked is counted in ``tally`` as it is, then the first other failure is raised."""
    chosen = [m for m in batch if reason is None or _death(m)[0] == reason]
    passed = [m for m in batch if reason is not None and _death(m)[0] != reason]
    consumed = [m for m in chosen if routes is None or _death(m)[1] in routes]
    strangers = [m for m in chosen if routes is not None and _death(m)[1] not in routes]
    results = await asyncio.gather(*(_republish(exchanges.work, m) for m in consumed), return_exceptions=True)
    unroutable = [*strangers, *(m for m, r in zip(consumed, results, strict=True) if isinstance(r, PublishError))]
    staying = [*unroutable, *passed]
    put_back = await asyncio.gather(*(_keep_dead(exchanges.dead, m) for m in staying), return_exceptions=True)
    kept, passed_kept = put_back[: len(unroutable)], put_back[len(unroutable) :]
    for message, result in zip(consumed, results, strict=True):
        if result is None:
            await message.ack()
            tally.sent += 1
            tally.events += int(codec.header_str(message.headers or {}, codec.KIND) == "event")
    for message, result in zip(unroutable, kept, strict=True):
        if result is None:
            await message.ack()
            key = _death(message)[1]
            tally.unroutable[key] = tally.unroutable.get(key, 0) + 1
    for message, result in zip(passed, passed_kept, strict=True):
        if result is None:
            await message.ack()
            tally.passed_over += 1
    others = [*(r for r in results if not isinstance(r, PublishError)), *kept, *passed_kept]
    failed = next((r for r in others if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed


async def _keep_dead(dead_exchange: AbstractExchange, message: AbstractIncomingMessage) -> None:
    """Publish ``message`` to the dead-letter queue again as it is (reason, error, attempts)."""
    await dead_exchange.publish(_copy(message, dict(message.headers or {})), "", timeout=10)


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` (body, ids, content type) with ``headers``."""
    return aio_pika.Message(
        message.body,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )


async def _republish(exchange: AbstractExchange, message: AbstractIncomingMessage) -> None:
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEAD_HEADERS}
    headers[codec.ATTEMPT] = 0
    headers[codec.TRIES] = 0
    headers[codec.REPLAYED] = 1
    await exchange.publish(
        _copy(message, headers),
        _death(message)[1],
        mandatory=True,
        timeout=10,
    )


_DEAD_HEADERS = frozenset(
    {
        codec.REASON,
        codec.ERROR,
        codec.ROUTING_KEY,
        codec.FAILING_SINCE,  # a replay starts its retries afresh: the old failure's age would dead-letter it at once
        codec.DELIVERY_COUNT,
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }
)
