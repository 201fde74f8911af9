"""The broker edge: one robust connection, a confirmed publishing channel, declared topology.

Publishing is the receiver's promise: :meth:`Broker.publish_event` returns only after the
broker confirmed a persistent, routed message; anything else (a nack, a message returned as
unroutable, no confirm in time) raises :class:`~lmsbridge.errors.BrokerUnavailable`. Events go
through the aiormq channel under aio-pika's (``mandatory``, confirms, ``on_return_raises``), with
their properties from a per-source :class:`~lmsbridge.broker.codec.EventEncoder`: the receiver's
hot path builds no aio-pika ``Message``.

Events are published in groups when they come close together, the way Nagle's rule groups a
socket's writes. A publish goes at once when nothing is in flight: no window open and no confirm
outstanding. Otherwise it waits until the current window (``broker.publish_linger``, 5 ms; opened
by the first publish that had to wait) closes, and everything that waited goes out together.

A quorum queue's work per message (a read, a Raft append, a log write, a confirm) is mostly paid
per arrival. Measured at 800 messages a second (bench/RESULTS.md, sixth session):
- one at a time: RabbitMQ ~310 us of CPU a message;
- in groups of four: ~160 us;
- the receiver's own CPU falls by about a fifth as well (fewer wake-ups per confirm).

A lone event (a quiet hour) pays no window; under load, where the groups pay off, an event waits
up to one window. A window's group goes to RabbitMQ in one write (:mod:`lmsbridge.broker.groups`),
and each publish still waits for its own confirm.

A message returned as unroutable means a queue or binding is gone (deleted by hand, or by a
policy) while RabbitMQ stayed up, so no reconnection declares it again. The publish is refused as
ever (a 503 for a webhook, a retry for a worker's message) and the broker declares its topology
again in the background, ``REDECLARE_DELAY`` seconds later: the tries after that route.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError

from lmsbridge.broker import codec
from lmsbridge.broker.codec import EventEncoder, SyncTask
from lmsbridge.broker.groups import Waiting, fail, publish_group
from lmsbridge.broker.topology import (
    DELAY_HEADER,
    EVENTS_KEY,
    Topology,
    declare,
    events_key,
    sync_key,
)
from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import BrokerUnavailable
from lmsbridge.lanes import in_background
from lmsbridge.logs import get_logger
from lmsbridge.settings import BrokerSettings, Settings

log = get_logger(__name__)

# What RabbitMQ going away looks like from aio-pika and aiormq (a closed channel is a RuntimeError there).
BROKER_FAULTS = (AMQPError, aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)


# After a message came back unroutable: wait this long, then declare the topology again. Declared
# again at once (within ~20 ms of the deletion, RabbitMQ 3.10, measured), a quorum queue's
# consumers are never told it was deleted: no basic.cancel, so they never consume the new queue,
# which still counts them. A second later they have been told, and consume it again.
REDECLARE_DELAY = 1.0
# And at least this long between two declarations (a burst of returns, one).
REDECLARE_INTERVAL = 2.0
# While RabbitMQ blocks the connection, a worker's publish looks again this often for a new one.
BLOCKED_POLL = 0.5
# While events wait for their confirms, this often a look whether RabbitMQ has blocked the connection.
BLOCK_CHECK = 0.1
# Seconds to open a connection, the TCP connect and the AMQP handshake together.
CONNECT_TIMEOUT = 10.0
# Channels a consumers' connection carries at most. A worker consumes each queue on a channel of
# its own, one per account; RabbitMQ allows 2,047 a connection by default (channel_max), and past
# that it closed the connection, which came back and was closed again, for ever (2,100 accounts).
CHANNELS_PER_CONNECTION = 1000


def _has_room(connection: AbstractRobustConnection) -> bool:
    """Whether ``connection`` may open another channel: fewer than :data:`CHANNELS_PER_CONNECTION`
    open and fewer than RabbitMQ's channel_max allows. Not while it is reconnecting: it will open
    its channels again."""
    transport = connection.transport
    if transport is None:
        return False
    channel_max = transport.connection.connection_tune.channel_max or CHANNELS_PER_CONNECTION + 1
    return len(transport.connection.channels) < min(CHANNELS_PER_CONNECTION, channel_max - 1)


async def connect_once(url: str, name: str) -> AbstractConnection:
    """A plain connection (not robust) for a command's one job, named ``name`` in RabbitMQ;
    BrokerUnavailable when RabbitMQ does not answer within :data:`CONNECT_TIMEOUT`.

    Without a timeout, ``dlq`` and ``status`` waited for ever on a RabbitMQ that opens the socket
    and never answers (out of file descriptors).
    """
    connection = aio_pika.Connection(make_url(url), client_properties={"connection_name": name})
    await _open(connection)
    return connection


async def _open(connection: AbstractConnection) -> None:
    """Connect, or close ``connection`` (left to the garbage collector, it would schedule its close
    from whatever thread collects it) and raise; BrokerUnavailable saying what no answer may mean.

    A RabbitMQ out of file handles (about 3 a quorum queue; 927 with the default limit of 1,024
    descriptors) still lets the kernel open the socket, then never answers the handshake, for
    every client, with nothing in its log: a bare ``TimeoutError`` told an operator nothing.
    """
    try:
        await connection.connect(timeout=CONNECT_TIMEOUT)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await connection.close()
        if isinstance(exc, TimeoutError):
            raise BrokerUnavailable(
                f"no AMQP handshake within {CONNECT_TIMEOUT:g} s: the host unreachable, or RabbitMQ out of "
                "file descriptors (`rabbitmq-diagnostics status`)"
            ) from None
        raise


def fault_fields(exc: BaseException) -> dict[str, str]:
    """Log fields of a broker fault: its kind, and what lmsbridge knows of it (never a URL)."""
    fields = {"error": type(exc).__name__}
    if isinstance(exc, BrokerUnavailable):
        fields["detail"] = str(exc)
    return fields


def _refused(exc: BaseException) -> BrokerUnavailable:
    """A nack (``DeliveryError``), a return (``PublishError``) or a lost connection, as a 503."""
    return BrokerUnavailable(f"RabbitMQ refused or lost the message: {type(exc).__name__}")


def _blocked() -> BrokerUnavailable:
    return BrokerUnavailable("RabbitMQ is blocking publishers (a memory or disk alarm)")


def _expire(done: asyncio.Future[None]) -> None:
    """A grouped publish's deadline passed before RabbitMQ answered."""
    if not done.done():
        done.set_exception(TimeoutError())


class Broker:
    """A robust connection to RabbitMQ that (re)declares the topology and publishes with confirms."""

    def __init__(
        self, url: str, settings: BrokerSettings, accounts: list[str], *, name: str, sources: Sequence[str] = ()
    ) -> None:
        self._url = url
        self.settings = settings
        self.accounts = list(accounts)
        self.sources = list(sources)
        self._name = name
        self.connection: AbstractRobustConnection | None = None
        # Consumers' channels, on a connection of their own (made at the first consumer's start).
        self._consuming: list[AbstractRobustConnection] = []  # a new one past CHANNELS_PER_CONNECTION
        self._consuming_lock = asyncio.Lock()
        self._channel: AbstractChannel | None = None
        self.topology: Topology | None = None
        self._connector: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._encoders: dict[str, EventEncoder] = {}
        self._group: list[Waiting] | None = None  # the events waiting in the publish window open now, if any
        self._writing: set[asyncio.Task[None]] = set()  # groups being written
        self._in_flight = 0  # events published and not yet confirmed (or refused)
        # The callers of those events (see _refuse_when_blocked): a grouped event's future, and a
        # lone event's channel and message id, whose confirmation aiormq keeps.
        self._waiting: set[asyncio.Future[None]] = set()
        self._lone: dict[object, tuple[aiormq.abc.AbstractChannel, str]] = {}
        self._block_watch: asyncio.Task[None] | None = None
        self._redeclaring: asyncio.Task[None] | None = None  # declaring the topology again after a return
        self._redeclared_at = -REDECLARE_INTERVAL  # time.monotonic() when the last such declaration ended

    @property
    def connected(self) -> bool:
        """True while the connection (and the consumers', once made) is up and the topology declared."""
        conn = self.connection
        if any(not consuming.connected.is_set() for consuming in self._consuming):
            return False
        return self._ready.is_set() and conn is not None and not conn.is_closed and conn.connected.is_set()

    @property
    def blocked(self) -> bool:
        """True while RabbitMQ blocks this connection's publishers (a memory or disk alarm).

        RabbitMQ says so with ``connection.blocked`` and stops reading the connection until the
        alarm clears. aiormq keeps that only in a private event (no public accessor in 7.x): read
        here, and false if a later aiormq renames it (tests/pipeline/test_alarms.py would fail).
        """
        unblocked = self._unblocked_event()
        return unblocked is not None and not unblocked.is_set()

    def _unblocked_event(self) -> asyncio.Event | None:
        """aiormq's event for the connection now, set while RabbitMQ does not block it."""
        transport = self.connection.transport if self.connection is not None else None
        if transport is None:
            return None
        unblocked = getattr(transport.connection, "_Connection__connection_unblocked", None)
        return unblocked if isinstance(unblocked, asyncio.Event) else None

    @classmethod
    def configured(cls, settings: Settings, *, name: str, accounts: Sequence[str] | None = None) -> Broker:
        """A broker for the RabbitMQ, sources and accounts of ``settings`` (``accounts``: only those)."""
        return cls(
            settings.amqp_url.get_secret_value(),
            settings.broker,
            list(settings.accounts() if accounts is None else accounts),
            name=name,
            sources=list(settings.sources),
        )

    async def start(self, *, wait: float | None = None) -> None:
        """Connect in the background, retrying until it works; wait up to ``wait`` seconds for it.

        Raises :class:`BrokerUnavailable` if ``wait`` is given and the broker did not come up.
        """
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect_forever(), name=f"{self._name}-connect")
            self._block_watch = asyncio.create_task(self._refuse_when_blocked(), name=f"{self._name}-blocks")
        if wait is not None:
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                raise BrokerUnavailable("RabbitMQ is unreachable") from None

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            try:
                # Built here rather than by connect_robust, so a failed attempt's connection is closed
                # below: left to the garbage collector, it schedules its own close from whatever thread
                # collects it, which off the event loop is a coroutine never awaited.
                self.connection = aio_pika.RobustConnection(
                    make_url(self._url), client_properties={"connection_name": self._name}
                )
                await _open(self.connection)
                self.connection.reconnect_callbacks.add(self._on_reconnect)
                self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
                self.topology = await declare(self._channel, self.settings, self.accounts, self.sources)
                self._ready.set()
                log.info("broker.connected", connection=self._name)
                return
            except (*BROKER_FAULTS, BrokerUnavailable, TimeoutError) as exc:
                log.warning("broker.unreachable", **fault_fields(exc), retry_in=delay)
                if self.connection is not None:
                    with contextlib.suppress(Exception):
                        await self.connection.close()
                    self.connection = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _on_reconnect(self, *_: object) -> None:
        log.info("broker.reconnected", connection=self._name)

    async def channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """A new channel for consuming (with ``prefetch`` unacknowledged messages at most) or for
        reading queue depths; never for publishing.

        On a connection of its own, never published on, as RabbitMQ advises: a memory or disk
        alarm blocks a connection that publishes (RabbitMQ stops reading it, acks included), and
        with the consumers on the publishing one, a worker whose retry met an alarm (or, under
        `run`, any webhook) stopped acking: its deliveries stalled at the prefetch limit, the
        queues stopped draining and the memory they held stayed held (and reading a queue's depth
        waited for the alarm to clear).
        """
        if self.connection is None:
            raise BrokerUnavailable("RabbitMQ is not connected")
        connection = await self._consuming_connection()
        channel = await connection.channel(publisher_confirms=False)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def queued_syncs(self, accounts: Iterable[str]) -> set[str]:
        """Those of ``accounts`` whose sync queue holds messages ready for a consumer;
        BrokerUnavailable when RabbitMQ cannot say (a queue deleted by hand closes the channel)."""
        names = self._require().names
        depths = await self.depths({account: names.sync(account) for account in accounts})
        return {account for account, ready in depths.items() if ready}

    async def depths(self, queues: dict[str, str]) -> dict[str, int]:
        """How many messages each queue holds ready for a consumer, by the key given for its name;
        BrokerUnavailable when RabbitMQ cannot say (a queue deleted by hand closes the channel)."""
        self._require()
        try:
            channel = await self.channel()
            try:
                depths = {}
                for key, name in sorted(queues.items()):
                    queue = await channel.declare_queue(name, passive=True)
                    depths[key] = int(queue.declaration_result.message_count or 0)
                return depths
            finally:
                if not channel.is_closed:
                    await channel.close()
        except BROKER_FAULTS as exc:
            raise BrokerUnavailable(f"RabbitMQ: reading queue depths: {type(exc).__name__}") from exc

    async def _consuming_connection(self) -> AbstractRobustConnection:
        """A consumers' connection with room for another channel (robust: once made, it reconnects
        by itself); a new one when every one has :data:`CHANNELS_PER_CONNECTION` open."""
        async with self._consuming_lock:
            self._consuming = [c for c in self._consuming if not c.is_closed]
            for connection in self._consuming:
                if _has_room(connection):
                    return connection
            more = f" {len(self._consuming) + 1}" if self._consuming else ""
            connection = aio_pika.RobustConnection(
                make_url(self._url), client_properties={"connection_name": f"{self._name} (consuming{more})"}
            )
            await _open(connection)
            self._consuming.append(connection)
            return connection

    def _require(self) -> Topology:
        if not self.connected or self.topology is None:
            raise BrokerUnavailable("RabbitMQ is not connected")
        return self.topology

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, message: aio_pika.Message, key: str, timeout: float
    ) -> None:
        """A worker's publish (a retry, a sync task, a dead letter), confirmed.

        While RabbitMQ blocks the connection (a memory or disk alarm) it first waits for the alarm
        to lift, however long: the message it settles stays in the worker's hands, unacked. Failing
        after ``timeout`` instead returned that message to its queue every ``timeout`` seconds, and
        RabbitMQ dead-letters a message delivered 50 times (``delivery_limit``): an alarm of eight
        minutes sent a worker's retries to the dead-letter queue.
        """
        await self._while_blocked()
        try:
            await exchange.publish(message, key, mandatory=True, timeout=timeout)
        except TimeoutError:
            raise BrokerUnavailable("RabbitMQ did not confirm in time") from None
        except BROKER_FAULTS as exc:
            raise self._refusal(exc) from None

    async def _while_blocked(self) -> None:
        """Return once RabbitMQ does not block this connection."""
        if not self.blocked:
            return
        log.warning("broker.blocked_wait", connection=self._name)
        while (unblocked := self._unblocked_event()) is not None and not unblocked.is_set():
            with contextlib.suppress(TimeoutError):  # looked up again: a reconnection replaces it
                await asyncio.wait_for(unblocked.wait(), BLOCKED_POLL)

    def _refusal(self, exc: BaseException) -> BrokerUnavailable:
        """What a failed publish raises; a message returned as unroutable also has the topology declared again."""
        if isinstance(exc, aiormq.exceptions.PublishError):
            self._redeclare(exc)
        return _refused(exc)

    def _redeclare(self, returned: aiormq.exceptions.PublishError) -> None:
        """Declare the topology again in the background, unless that is under way or was just done."""
        if self._redeclaring is not None or time.monotonic() - self._redeclared_at < REDECLARE_INTERVAL:
            return
        delivery = returned.message.delivery if returned.message is not None else None
        log.warning(
            "broker.unroutable",
            connection=self._name,
            routing_key=getattr(delivery, "routing_key", None),
            reply=getattr(delivery, "reply_text", None),
        )
        self._redeclaring = asyncio.create_task(self._declare_again(), name=f"{self._name}-redeclare")

    async def _declare_again(self) -> None:
        """Declare every exchange, queue and binding again, on a channel of its own.

        A channel of its own: a declaration RabbitMQ refuses (a queue of that name with other
        arguments) closes the channel it was made on, and the publishing channel stays untouched.
        """
        try:
            await asyncio.sleep(REDECLARE_DELAY)
            if self.connection is None:
                return
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                await asyncio.wait_for(declare(channel, self.settings, self.accounts, self.sources), 30)
            finally:
                with contextlib.suppress(*BROKER_FAULTS, TimeoutError):
                    await channel.close()
            log.warning("broker.topology_declared", connection=self._name, reason="a message came back unroutable")
        except (*BROKER_FAULTS, TimeoutError) as exc:
            # RabbitMQ's reply names the queue and the argument that differs (never a password).
            detail = str(exc)
            log.error("broker.topology_declare_failed", connection=self._name, error=type(exc).__name__, detail=detail)
        finally:
            self._redeclaring = None
            self._redeclared_at = time.monotonic()

    async def publish_event(self, event: AssignmentEvent, *, timeout: float, background: bool = False) -> None:
        """Publish an accepted event; returns once RabbitMQ confirmed it routed and persisted.

        ``background``: reconciliation's event, whose work waits behind live work (:mod:`lmsbridge.lanes`).
        """
        topology = self._require()
        if self.blocked:
            # Refused at once: written now, it would wait in the socket for the alarm to clear, and
            # its caller out its whole timeout (then RabbitMQ would take it after all: a ghost copy).
            raise _blocked()
        encoder = self._encoders.get(event.source)
        if encoder is None:
            encoder = self._encoders[event.source] = EventEncoder(event.source)
        key = events_key(event.source) if event.source in self.sources else EVENTS_KEY
        body, properties = encoder.encode(event, background=background)
        grouped = self.settings.publish_linger > 0 and (self._group is not None or self._in_flight > 0)
        self._in_flight += 1  # before the first await: a publish started meanwhile sees it
        try:
            if grouped:
                loop = asyncio.get_running_loop()
                done: asyncio.Future[None] = loop.create_future()
                # A timer on the future rather than asyncio.timeout: the same deadline at less than half the cost.
                expiry = loop.call_later(timeout, _expire, done)
                self._join_group(Waiting(body, properties, key, done))
                self._waiting.add(done)
                try:
                    await done
                finally:
                    expiry.cancel()
                    self._waiting.discard(done)
                return
            channel = await self._underlay()
            token = object()
            self._lone[token] = (channel, properties.message_id or "")
            try:
                # wait=False: no drain of the socket per message; the confirm is what is awaited.
                # (aiormq's Channel takes it; its abc does not declare it.)
                await channel.basic_publish(  # type: ignore[call-arg]
                    body,
                    exchange=topology.exchange.name,
                    routing_key=key,
                    properties=properties,
                    mandatory=True,
                    timeout=timeout,
                    wait=False,
                )
            finally:
                del self._lone[token]
        except TimeoutError:
            raise BrokerUnavailable("RabbitMQ did not confirm in time") from None
        except BROKER_FAULTS as exc:
            raise self._refusal(exc) from None
        finally:
            self._in_flight -= 1

    async def _refuse_when_blocked(self) -> None:
        """Refuse the events waiting for their confirms as soon as RabbitMQ blocks the connection.

        RabbitMQ blocks a connection (a memory or disk alarm) when it next publishes, and answers
        nothing on it until the alarm clears: the events written just before waited out their whole
        ``publish_timeout``, their senders with them. Looked for every :data:`BLOCK_CHECK` seconds
        while events wait, they get their 503 within that. (Their copies may still reach the queues
        after the alarm, as after the timeout: a retried webhook's duplicate, which the inbox drops.)
        """
        while True:
            await asyncio.sleep(BLOCK_CHECK)
            if not (self._waiting or self._lone) or not self.blocked:
                continue
            for done in list(self._waiting):
                if not done.done():
                    done.set_exception(_blocked())
            for channel, message_id in list(self._lone.values()):
                if not isinstance(channel, aiormq.Channel):
                    continue
                tag = channel.message_id_delivery_tag.get(message_id)
                confirmation = channel.confirmations.get(tag) if tag is not None else None
                if isinstance(confirmation, asyncio.Future) and not confirmation.done():
                    confirmation.set_exception(_blocked())

    def _join_group(self, waiting: Waiting) -> None:
        """Add ``waiting`` to the open window's group (opening one if none is); RabbitMQ's answer settles it."""
        if self._group is None:
            self._group = []
            asyncio.get_running_loop().call_later(self.settings.publish_linger, self._close_window)
        self._group.append(waiting)

    def _close_window(self) -> None:
        """Write the window's group, in a task of its own (kept until it is done)."""
        group, self._group = self._group or [], None
        task = asyncio.create_task(self._publish_group(group), name=f"{self._name}-publish-group")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _publish_group(self, group: list[Waiting]) -> None:
        try:
            topology = self._require()
            channel = await self._underlay()
        except Exception as exc:
            fail(group, exc)
            return
        await publish_group(channel, topology.exchange.name, group)

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        """The aiormq channel under aio-pika's (after a reconnection, the new one).

        Refused at once while it is closed: aio-pika's robust channel may wait for a reconnection there
        (seen with the connection closed), and no caller's timeout covers that wait.
        """
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("RabbitMQ's channel is closed (reopening)")
        return await self._channel.get_underlay_channel()

    async def publish_sync(
        self,
        task: SyncTask,
        *,
        correlation_id: str,
        received_at: float,
        attempt: int = 0,
        delay_level: int | None = None,
        failing_since: float | None = None,
        timeout: float = 10.0,
        background: bool = False,
        tries: int = 0,
    ) -> None:
        """Queue a sync task for one record on one account (confirmed).

        With ``delay_level`` it waits in that delay queue first, as a retried message does;
        ``background`` marks reconciliation's work (:mod:`lmsbridge.lanes`); ``tries`` counts the
        task's earlier tries when it is published again after one.
        """
        topology = self._require()
        delayed = delay_level is not None
        message = codec.encode_sync(
            task,
            correlation_id=correlation_id,
            received_at=received_at,
            attempt=attempt,
            failing_since=failing_since,
            extra={DELAY_HEADER: delay_level} if delayed else None,
            background=background,
            tries=tries,
        )
        exchange = topology.delay_exchange if delayed else topology.exchange
        await self._publish(exchange, message, sync_key(task.account), timeout)

    async def publish_dead_sync(
        self,
        task: SyncTask,
        *,
        correlation_id: str,
        received_at: float,
        attempt: int,
        reason: str,
        error: str,
        tries: int = 0,
        timeout: float = 10.0,
    ) -> None:
        """Put a sync task that failed for good in the dead-letter queue with its reason and its
        tries (the last included)."""
        topology = self._require()
        message = codec.dead_sync(
            task,
            correlation_id=correlation_id,
            received_at=received_at,
            attempt=attempt,
            reason=reason,
            error=error,
            routing_key=sync_key(task.account),
            tries=tries,
        )
        await self._publish(topology.dead_exchange, message, "", timeout)

    async def publish_retry(
        self,
        message: AbstractIncomingMessage,
        *,
        attempt: int,
        level: int,
        failing_since: float | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Park a copy of ``message`` in delay queue ``level``; it returns to its queue on expiry."""
        topology = self._require()
        copy = codec.retried(
            message, attempt=attempt, delay_header=DELAY_HEADER, level=level, failing_since=failing_since
        )
        await self._publish(topology.delay_exchange, copy, message.routing_key or "", timeout)

    async def publish_dead(
        self, message: AbstractIncomingMessage, *, reason: str, error: str, timeout: float = 10.0
    ) -> None:
        """Put a copy of ``message`` in the dead-letter queue with its reason."""
        topology = self._require()
        await self._publish(topology.dead_exchange, codec.dead(message, reason=reason, error=error), "", timeout)

    async def close(self) -> None:
        """Stop connecting and close the connection."""
        for task in (self._connector, self._redeclaring, self._block_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for connection in (*self._consuming, self.connection):
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
        self._ready.clear()


class BrokerSyncQueue:
    """Adapts the broker to the service's :class:`~lmsbridge.ports.SyncQueuePort`: a confirmed sync
    task on the account's sync queue, in the lane of the work that queues it (:mod:`lmsbridge.lanes`)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def queue_sync(self, record_id: int, account: str, *, correlation_id: str, received_at: float) -> None:
        await self._broker.publish_sync(
            SyncTask(record_id, account),
            correlation_id=correlation_id,
            received_at=received_at,
            background=in_background(),
        )
