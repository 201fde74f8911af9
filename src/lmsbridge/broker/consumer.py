"""The consumer: the only place that acks, retries, dead-letters or returns a message.

One channel per intake queue and one per StackOne account, so pausing an account
(401/403/412) stops only that account's deliveries while its messages stay queued.

An event's records are synced by the consumer that stored it, before the event is acked
(up to ``inline_limit`` (record, account) pairs; beyond that, or for a paused account, one
sync task each is queued instead). That saves every event a second trip through RabbitMQ
and keeps intake and delivery advancing together: no more events are stored ahead of
their syncs than the prefetch holds. A crash before the ack redelivers the event, which
is then a duplicate and syncs the same records again (the leases and write-ahead intents
make that safe). A sync that fails here is handed to its account's queue with the same
decision a sync task would get: a delayed retry, a dead letter with its reason, or a wait
in the queue of a paused account.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from lmsbridge.broker.codec import SyncTask, Task, decode
from lmsbridge.broker.connection import Broker
from lmsbridge.broker.outcome import Action, decide
from lmsbridge.broker.topology import Names, delay_level
from lmsbridge.errors import BrokerUnavailable, InfrastructureFault, LmsbridgeError, ParkRecord, PauseAccount
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.service import Service, describe
from lmsbridge.settings import BrokerSettings

log = get_logger(__name__)

Probe = Callable[[str], Awaitable[None]]


class Consumer:
    """Consumes events and per-account sync tasks, and settles every message exactly once."""

    def __init__(
        self,
        broker: Broker,
        service: Service,
        settings: BrokerSettings,
        metrics: Metrics,
        *,
        probe: Probe,
        probe_interval: float = 5.0,
        inline_limit: int = 0,
    ) -> None:
        self._broker = broker
        self._service = service
        self._settings = settings
        self._metrics = metrics
        self._probe = probe
        self._probe_interval = probe_interval
        self._inline_limit = inline_limit
        self._names = Names(settings.prefix)
        self._channels: list[AbstractChannel] = []
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}  # queue name -> (queue, tag)
        self._inflight: set[asyncio.Task[None]] = set()
        self._paused: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def paused_accounts(self) -> list[str]:
        """Accounts whose deliveries are paused."""
        return sorted(self._paused)

    async def start(self) -> None:
        """Start consuming every intake queue (one per source, and the shared one) and every account's sync queue."""
        await self._consume(self._names.events, None)
        for source in self._broker.sources:
            await self._consume(self._names.intake(source), None)
        for account in self._broker.accounts:
            state = await self._service.repo.account(account)
            if state.paused:
                self._start_probe(account)
            else:
                await self._consume(self._names.sync(account), account)

    async def _consume(self, queue_name: str, account: str | None) -> None:
        channel = await self._broker.channel(prefetch=self._settings.prefetch)
        self._channels.append(channel)
        queue = await channel.get_queue(queue_name, ensure=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                await self._handle(message)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        tag = await queue.consume(on_message)
        self._consumers[queue_name] = (queue, tag)

    # --- handling -----------------------------------------------------------------------

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        try:
            task = decode(message)
        except LmsbridgeError as poison:
            await self._apply(
                message, None, decide(poison, attempt=0, max_attempts=1, steps=self._settings.retry_delays)
            )
            return
        context: dict[str, object] = {
            "correlation_id": task.correlation_id,
            "message_id": task.message_id,
            "attempt": task.attempt,
        }
        if task.event is not None:
            context.update(source=task.event.source, event_type=task.event.type)
        if task.sync is not None:
            context.update(account=task.sync.account, record_id=task.sync.record_id)
        structlog.contextvars.bind_contextvars(**context)
        try:
            exc: BaseException | None = None
            try:
                await self._run(task)
            except asyncio.CancelledError:
                raise
            except Exception as caught:  # every failure is settled below; none crashes the worker
                exc = caught
            action = decide(
                exc,
                attempt=task.attempt,
                max_attempts=self._settings.max_attempts,
                steps=self._settings.retry_delays,
            )
            if exc is not None:
                getattr(log, _level(action))(
                    f"{task.kind}.{_stage(action, exc)}",
                    duration=time.perf_counter() - started,
                    **describe(exc),
                )
            # Recorded in the database only once the broker holds the outcome: a record marked dead
            # whose dead letter was never published would be dropped when its task came back.
            if await self._apply(message, task, action) and task.sync is not None and exc is not None:
                await self._settle(task.sync, action, exc)
            if isinstance(exc, PauseAccount) and task.sync is not None:
                await self.pause(task.sync.account, exc)
        finally:
            structlog.contextvars.unbind_contextvars(*context)

    async def _run(self, task: Task) -> None:
        started = time.perf_counter()
        if task.event is not None:
            event = task.event
            self._metrics.stage("consumed")
            log.info("event.consumed")
            duplicate, ids = await self._service.store(event)
            self._metrics.stage("duplicate" if duplicate else "upserted")
            log.info(
                "event.duplicate" if duplicate else "event.upserted",
                records=len(ids),
                duration=time.perf_counter() - started,
            )
            targets = self._service.targets(event, ids)
            here = len(targets) <= self._inline_limit
            inline: list[tuple[int, str]] = []
            queued: list[tuple[int, str]] = []
            for target in targets:
                (inline if here and self._syncs_here(target[1]) else queued).append(target)
            results = await asyncio.gather(
                self._service.queue_syncs(event, queued),
                *(self._sync_here(task, SyncTask(rid, account)) for rid, account in inline),
                return_exceptions=True,
            )
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed  # the event is retried; redelivered, it syncs its records again
        elif task.sync is not None:
            await self._sync(task, task.sync, revive=task.replayed)

    def _syncs_here(self, account: str) -> bool:
        """Whether this consumer may sync ``account`` now (it consumes its queue, not paused)."""
        return account not in self._paused and self._names.sync(account) in self._consumers

    async def _sync(self, task: Task, sync: SyncTask, *, revive: bool = False) -> None:
        started = time.perf_counter()
        result = await self._service.sync(sync.record_id, sync.account, revive=revive)
        if result.steps:
            self._metrics.record("pushed")
            self._metrics.lag_seconds.observe(max(0.0, time.time() - task.received_at))
            steps = [s.value for s in result.steps]
            log.info("sync.pushed", steps=steps, duration=time.perf_counter() - started)

    async def _sync_here(self, task: Task, sync: SyncTask) -> None:
        """Sync one of an event's records; a failure is settled as its sync task's would be."""
        with structlog.contextvars.bound_contextvars(account=sync.account, record_id=sync.record_id):
            try:
                await self._sync(task, sync)
                return
            except Exception as caught:  # settled below, as for a sync task of attempt 0
                exc = caught
            action = decide(exc, attempt=0, max_attempts=self._settings.max_attempts, steps=self._settings.retry_delays)
            getattr(log, _level(action))(f"sync.{_stage(action, exc)}", **describe(exc))
            await self._hand_over(task, sync, action)  # first, as in _handle: see there
            await self._settle(sync, action, exc)
            if isinstance(exc, PauseAccount):
                await self.pause(sync.account, exc)

    async def _hand_over(self, task: Task, sync: SyncTask, action: Action) -> None:
        """Queue a sync that failed here as the sync task the decision makes of it (confirmed).

        Raises BrokerUnavailable, so the event is retried rather than a sync forgotten.
        """
        cid, received = task.correlation_id, task.received_at
        if action.kind == "retry":
            level = delay_level(self._settings, action.delay)
            await self._broker.publish_sync(
                sync, correlation_id=cid, received_at=received, attempt=action.attempt, delay_level=level
            )
        elif action.kind == "dead":
            await self._broker.publish_dead_sync(
                sync,
                correlation_id=cid,
                received_at=received,
                attempt=action.attempt,
                reason=action.reason,
                error=action.error,
            )
        elif action.kind == "pause":  # the task waits in the account's queue until the account works again
            await self._broker.publish_sync(sync, correlation_id=cid, received_at=received, attempt=action.attempt)
        # ack: nothing to queue (a parked record waits in the database)
        self._count(action, self._metrics.record)

    async def _settle(self, sync: SyncTask, action: Action, exc: BaseException) -> None:
        kind = "parked" if isinstance(exc, ParkRecord) else action.kind
        reason = exc.reason if isinstance(exc, ParkRecord) else action.reason
        with contextlib.suppress(InfrastructureFault):
            await self._service.settle_sync(sync.record_id, sync.account, kind, reason, action.error or str(exc))

    async def _apply(self, message: AbstractIncomingMessage, task: Task | None, action: Action) -> bool:
        """Carry out ``action``; False if the broker failed meanwhile and the message went back to its queue."""
        try:
            if action.kind == "ack":
                await message.ack()
            elif action.kind == "retry":
                level = delay_level(self._settings, action.delay)
                await self._broker.publish_retry(message, attempt=action.attempt, level=level)
                await message.ack()
            elif action.kind == "dead":
                await self._broker.publish_dead(message, reason=action.reason, error=action.error)
                await message.ack()
            else:  # pause: the message goes back to its queue, untouched
                await message.nack(requeue=True)
        except (BrokerUnavailable, ConnectionError, RuntimeError) as exc:
            log.warning("message.returned", reason="broker_fault", error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return False
        self._count(action, self._metrics.record if task is not None and task.kind == "sync" else self._metrics.stage)
        return True

    @staticmethod
    def _count(action: Action, count: Callable[[str], None]) -> None:
        """Count (and for a dead letter, log) an outcome the broker now holds."""
        if action.kind == "ack":
            if action.reason:
                count("parked")
        elif action.kind == "dead":
            count("dead_lettered")
            log.error("message.dead_lettered", reason=action.reason, error=action.error)
        else:
            count({"retry": "retried", "pause": "paused"}[action.kind])

    # --- pausing accounts ---------------------------------------------------------------

    async def pause(self, account: str, exc: PauseAccount) -> None:
        """Stop consuming ``account``'s queue until a probe call succeeds again."""
        if account in self._paused:
            return
        queue_name = self._names.sync(account)
        entry = self._consumers.pop(queue_name, None)
        if entry is not None:
            queue, tag = entry
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        with contextlib.suppress(InfrastructureFault):
            await self._service.repo.update_account(account, paused=True, reason=str(exc), status=exc.status)
        log.error("account.paused", account=account, status=exc.status, error=str(exc))
        self._start_probe(account)

    def _start_probe(self, account: str) -> None:
        self._paused[account] = asyncio.create_task(self._probe_until_usable(account), name=f"probe-{account}")
        self._metrics.paused_accounts.set(len(self._paused))

    async def _probe_until_usable(self, account: str) -> None:
        interval = self._probe_interval
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self._probe(account)
            except Exception as exc:  # still unusable (or StackOne is down): keep waiting
                log.warning("account.still_paused", account=account, **describe(exc))
                interval = min(interval * 2, 300.0)
                continue
            with contextlib.suppress(InfrastructureFault):
                await self._service.repo.update_account(account, paused=False, reason=None, status=None)
            await self._consume(self._names.sync(account), account)
            log.info("account.resumed", account=account)
            break
        self._paused.pop(account, None)
        self._metrics.paused_accounts.set(len(self._paused))

    # --- shutdown -----------------------------------------------------------------------

    async def stop(self, *, drain_timeout: float) -> None:
        """Stop fetching, finish what is in hand (up to ``drain_timeout``), close channels.

        Messages not finished in time are never acked, so RabbitMQ redelivers them.
        """
        self._stopping = True
        for queue, tag in list(self._consumers.values()):
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        for probe in self._paused.values():
            probe.cancel()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=drain_timeout)
            for task in pending:
                task.cancel()
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()


def _level(action: Action) -> str:
    if action.kind in ("dead", "pause"):
        return "error"
    # Another consumer holding the record is routine; the retry is only worth a debug line.
    return "debug" if action.reason in ("lease_busy", "") else "warning"


def _stage(action: Action, exc: BaseException) -> str:
    if isinstance(exc, ParkRecord):
        return "parked"
    return {"retry": "retried", "dead": "dead_lettered", "pause": "paused", "ack": "done"}[action.kind]
