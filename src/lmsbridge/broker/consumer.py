"""The consumer: takes deliveries and settles each exactly once.

One channel per intake queue and one per StackOne account, so pausing an account
(401/403/412, or its circuit breaker open) stops only that account's deliveries while
its messages stay queued.

A delivery goes down and comes back once: :func:`~lmsbridge.broker.codec.decode` it into a
:class:`~lmsbridge.broker.codec.Job`, run it (store an event and sync its records, or sync
one record), :func:`~lmsbridge.broker.outcome.decide` what its outcome means, and have
:class:`~lmsbridge.broker.settle.Settler` carry that out (publish, database, ack, metrics).
The consumer and the dead-letter tool (:mod:`lmsbridge.broker.dead`, for operators) are
the only places that ack; the consumer's acks go in groups (:mod:`lmsbridge.broker.acks`).

An event's records are synced by the consumer that stored it, before the event is acked
(up to ``inline_limit`` (record, account) pairs; beyond that, or for a paused account, one
sync task each is queued instead). A crash before the ack redelivers the event, which is
then a duplicate and syncs the same records again (the leases and write-ahead intents
make that safe). A sync that fails there is settled as its own sync task would be.

A reconcile pass's jobs (the background lane, :mod:`lmsbridge.lanes`) start only in a gap
between live ones (:class:`~lmsbridge.lanes.LiveFirst`, at most a second's wait).

When most jobs fail on the database itself (:func:`~lmsbridge.broker.breaker.database_fault`:
a full disk, PostgreSQL down), the consumer stops consuming every queue and probes the
database (``database.paused``), resuming when a write transaction commits again; the
messages wait in their queues meanwhile, instead of each going round its retry queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from lmsbridge.broker.acks import AckGroups
from lmsbridge.broker.breaker import Breaker, database_fault
from lmsbridge.broker.codec import Job, SyncTask, decode
from lmsbridge.broker.connection import BROKER_FAULTS, Broker, fault_fields
from lmsbridge.broker.outcome import Action, Policy, decide
from lmsbridge.broker.settle import Settler
from lmsbridge.broker.sweeper import Sweeper
from lmsbridge.broker.topology import DELIVERY_LIMIT, Names, declare_work_queue, work_queues
from lmsbridge.errors import BrokerUnavailable, DeadLetter, InfrastructureFault
from lmsbridge.lanes import LiveFirst, lane
from lmsbridge.logs import bound, get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.ports import AccountPort
from lmsbridge.service import Claimed, Service, describe
from lmsbridge.settings import BrokerSettings

log = get_logger(__name__)

Probe = Callable[[str], Awaitable[None]]
T = TypeVar("T")
DATABASE = "database"  # the database breaker's one key


class Consumer:
    """Consumes events and per-account sync tasks, and settles every message exactly once."""

    def __init__(
        self,
        broker: Broker,
        service: Service,
        settings: BrokerSettings,
        metrics: Metrics,
        *,
        accounts: AccountPort,
        probe: Probe,
        check_database: Callable[[], Awaitable[None]] | None = None,
        probe_interval: float = 5.0,
        inline_limit: int = 0,
        admit: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self._broker = broker
        self._service = service
        self._accounts = accounts
        self._settings = settings
        self._metrics = metrics
        self._probe = probe
        self._probe_interval = probe_interval
        self._inline_limit = inline_limit
        self._admit = admit
        self._names = Names(settings.prefix)
        self._keys = work_queues(self._names, broker.sources, broker.accounts)  # queue name -> routing key
        self._policy = Policy.of(settings)
        self._breaker = Breaker(
            window=settings.breaker_window,
            min_calls=settings.breaker_min_calls,
            failure_rate=settings.breaker_failure_rate,
        )
        self._db_breaker = Breaker(
            window=settings.breaker_window,
            min_calls=settings.breaker_min_calls,
            failure_rate=settings.breaker_failure_rate,
            judge=database_fault,
        )
        self._check_database = check_database
        self._db_pause: asyncio.Task[None] | None = None
        self._db_wait = probe_interval  # the last pause's first wait (doubled when paused again soon)
        self._db_resumed: float | None = None
        self._acks = AckGroups(settings.ack_linger)
        self._settler = Settler(broker, service.leases, settings, metrics, pause=self.pause, ack=self._acks.ack)
        self._sweeper = Sweeper(service.leases, broker, settings, accounts=self._active_accounts)
        self._channels: list[AbstractChannel] = []
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}  # queue name -> (queue, tag)
        self._queues: dict[str, AbstractQueue] = {}  # one channel per queue, kept across pauses
        self._probe_wait: dict[str, float] = {}  # account -> first wait before probing it
        self._inflight: set[asyncio.Task[None]] = set()
        self._paused: dict[str, asyncio.Task[None]] = {}
        self._pause_reasons: dict[str, str] = {}
        self._resumed: dict[str, float] = {}  # account -> when it was last resumed (retry age restarts)
        self._background: list[asyncio.Task[None]] = []
        self._live_first = LiveFirst()
        self._stopping = False

    @property
    def paused_accounts(self) -> list[str]:
        """Accounts whose deliveries are paused."""
        return sorted(self._paused)

    @property
    def database_paused(self) -> bool:
        """Whether consumption is stopped because the database fails (probed until it works)."""
        return self._db_pause is not None

    def _active_accounts(self) -> list[str]:
        return [a for a in self._broker.accounts if a not in self._paused]

    async def start(self) -> None:
        """Start consuming every intake queue (one per source, and the shared one) and every account's sync queue.

        RabbitMQ can go away between connecting and consuming (a restart, a forced close): start
        then waits for it, as :meth:`Broker.start` does, and carries on where it stopped, instead
        of ending the worker with the fault.
        """
        delay = 0.5
        while True:
            try:
                await self._start_consuming()
                break
            except (*BROKER_FAULTS, BrokerUnavailable, InfrastructureFault, TimeoutError) as exc:
                if self._stopping:
                    raise
                log.warning("consumer.start_failed", **fault_fields(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._background.append(asyncio.create_task(self._sweeper.run(), name="sweeper"))

    async def _start_consuming(self) -> None:
        """Consume what is not consumed yet; again after a fault, it skips what the last try started.

        The accounts' sync queues first: an event syncs its records where it is stored only on an
        account whose queue this consumer takes (:meth:`_syncs_here`). Taken after the intake, a
        backlog's first events (a prefetch of them) queued a sync task each instead, and the sync
        queue's prefetch of records waited, stored, on top of the intake's."""
        for account in self._broker.accounts:
            if account in self._paused or self._names.sync(account) in self._consumers:
                continue
            state = await self._accounts.account(account)
            if state.paused:
                self._pause_reasons[account] = state.reason or "paused"
                self._start_probe(account)
            else:
                await self._consume_once(self._names.sync(account))
        await self._consume_once(self._names.events)
        for source in self._broker.sources:
            await self._consume_once(self._names.intake(source))

    async def _consume_once(self, queue_name: str) -> None:
        if queue_name not in self._consumers:
            await self._consume(queue_name)

    async def _consume(self, queue_name: str) -> None:
        queue = self._queues.get(queue_name)
        if queue is None or queue.channel.is_closed:
            if queue is not None and queue.channel in self._channels:
                self._channels.remove(queue.channel)
            channel = await self._broker.channel(prefetch=self._settings.prefetch)
            try:
                # Declared, not looked up: a queue deleted under its consumer is declared again.
                queue = await declare_work_queue(channel, self._settings, queue_name, self._keys[queue_name])
            except BaseException:  # not kept: RabbitMQ would otherwise get it back, unused, on a reconnect
                await _quietly(channel.close())
                raise
            self._channels.append(channel)
            self._queues[queue_name] = queue

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            self._acks.arrived(message)  # from here no grouped ack reaches past it until it is settled
            try:
                await self._handle(message)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        tag = await queue.consume(on_message)
        self._consumers[queue_name] = (queue, tag)

    # --- one delivery: decode, run, decide, settle --------------------------------------

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        try:
            job = decode(message)
        except DeadLetter as poison:
            await self._settle(message, _unreadable(message), Action("dead", reason=poison.reason, error=str(poison)))
            return
        with bound(**_context(job)), lane(job.background):
            if job.delivery_count >= DELIVERY_LIMIT - 1:
                # The broker would dead-letter it on the next return, leaving the record saying nothing.
                error = f"delivered {job.delivery_count + 1} times without an outcome"
                await self._settle(message, job, Action("dead", reason="delivery_limit", error=error), started)
                return
            if job.sync is not None and job.sync.account in self._paused:
                # Delivered before the account's pause took effect: back to its queue, unsent.
                error = self._pause_reasons.get(job.sync.account, "paused")
                action = Action("pause", attempt=job.attempt, reason="account_paused", error=error)
                await self._settle(message, job, action, started)
                return
            # No new work while the StackOne requests this process already expects would wait longer
            # than a share of the lease: the message waits here, unacked, instead of leasing rows it
            # cannot sync in time. Admitted, the job counts among those requests until it ends.
            async with self._admit() if self._admit is not None else contextlib.nullcontext():
                if job.background:  # reconciliation's work starts in a gap between live jobs (lmsbridge.lanes)
                    await self._live_first.gap()
                    stored, exc = await _outcome(self._run(job))
                else:
                    with self._live_first.live():
                        stored, exc = await _outcome(self._run(job))
            await self._settle(message, job, self._decide(job, exc), started, exc, stored=stored)

    async def _settle(
        self,
        message: AbstractIncomingMessage,
        job: Job,
        action: Action,
        started: float | None = None,
        exc: BaseException | None = None,
        *,
        stored: str | None = None,
    ) -> None:
        duration = time.perf_counter() - started if started is not None else 0.0
        try:
            await self._settler.settle(job, action, exc, message=message, duration=duration, stored=stored)
        except asyncio.CancelledError:
            raise
        except Exception as fault:  # the broker or database failed: the message goes back, unsettled
            log.warning("message.returned", reason="broker_fault", error=type(fault).__name__)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
                self._acks.nacked(message)

    def _decide(self, job: Job, exc: BaseException | None) -> Action:
        if self._db_breaker.record(DATABASE, exc):
            self._pause_database(exc)  # this message is still retried (its action below)
        since = job.failing_since
        if job.sync is not None:
            account = job.sync.account
            if self._breaker.record(account, exc):
                return Action("pause", attempt=job.attempt, reason="circuit_open", error=f"circuit open: {exc}")
            resumed = self._resumed.get(account)
            if since is not None and resumed is not None:
                since = max(since, resumed)  # time spent paused is not time failing
        return decide(exc, attempt=job.attempt, failing_since=since, now=time.time(), policy=self._policy)

    async def _run(self, job: Job) -> str | None:
        """Run ``job``; for an event, how it was stored (``upserted`` or ``duplicate``)."""
        if job.event is not None:
            return await self._ingest(job)
        if job.sync is not None:
            await self._sync(job, job.sync, revive=job.replayed)
        return None

    async def _ingest(self, job: Job) -> str:
        """Store an event and sync its records; ``upserted`` or ``duplicate``, counted once it is acked
        (a delivery that fails after storing it is redelivered, and its redelivery is the duplicate)."""
        started = time.perf_counter()
        event = job.event
        assert event is not None
        # Once an event, however often it comes back: its later deliveries are counted apart.
        self._metrics.stage("redelivered" if job.tries or job.replayed else "consumed")
        log.debug("event.consumed")  # at info an event writes its outcome (upserted / duplicate) and each push
        accounts = self._service.accounts_of.get(event.source, [])
        # The rows of records this event creates are leased as they are stored when they will be synced here.
        here = all(self._syncs_here(account) for account in accounts)
        stored = await self._service.store(event, claim_up_to=self._inline_limit if here else 0)
        stage = "duplicate" if stored.duplicate else "upserted"
        log.info(
            "event.duplicate" if stored.duplicate else "event.upserted",
            records=len(stored.record_ids),
            duration=time.perf_counter() - started,
        )
        targets = self._service.targets(event, stored.record_ids)
        within = len(targets) <= self._inline_limit
        inline = [t for t in targets if t in stored.claimed or (within and self._syncs_here(t[1]))]
        queued = [t for t in targets if t not in inline]
        if not queued and len(inline) == 1:
            # The common event (one person, one account): synced here without gather's two tasks.
            [(rid, account)] = inline
            await self._sync_here(job, SyncTask(rid, account), stored.claimed.get((rid, account)))
            return stage
        results = await asyncio.gather(
            self._service.queue_syncs(event, queued),
            *(
                self._sync_here(job, SyncTask(rid, account), stored.claimed.get((rid, account)))
                for rid, account in inline
            ),
            return_exceptions=True,
        )
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed  # the event is retried; redelivered, it syncs its records again
        return stage

    def _syncs_here(self, account: str) -> bool:
        """Whether this consumer may sync ``account`` now (it consumes its queue, not paused)."""
        return account not in self._paused and self._names.sync(account) in self._consumers

    async def _sync(self, job: Job, sync: SyncTask, *, revive: bool = False, claimed: Claimed | None = None) -> None:
        started = time.perf_counter()
        result = await self._service.sync(sync.record_id, sync.account, revive=revive, claimed=claimed)
        if result.steps:
            self._metrics.record("pushed")
            self._metrics.lag_seconds.observe(max(0.0, time.time() - job.received_at))
            steps = [s.value for s in result.steps]
            log.info("sync.pushed", steps=steps, duration=time.perf_counter() - started)

    async def _sync_here(self, event: Job, sync: SyncTask, claimed: Claimed | None = None) -> None:
        """Sync one of an event's records; settled as its sync task would be (raises if that fails).

        ``claimed``: its row was leased when the event was stored; it is synced here whatever happens.
        """
        job = event.syncing(sync)
        with bound(account=sync.account, record_id=sync.record_id):
            started = time.perf_counter()
            _, exc = await _outcome(self._sync(event, sync, claimed=claimed))
            await self._settler.settle(job, self._decide(job, exc), exc, duration=time.perf_counter() - started)

    # --- pausing accounts ---------------------------------------------------------------

    async def pause(self, account: str, reason: str, status: int | None) -> None:
        """Stop consuming ``account``'s queue until a probe call succeeds again."""
        if account in self._paused:
            return
        self._pause_reasons[account] = reason
        self._breaker.reset(account)
        # Paused again soon after a probe said it works (an account refusing only writes): wait
        # longer each time, up to probe_max_seconds, rather than cycling at the first interval.
        resumed = self._resumed.get(account)
        again = resumed is not None and time.time() - resumed < max(self._settings.probe_max_seconds, 1.0)
        ceiling = max(self._settings.probe_max_seconds, self._probe_interval)
        previous = self._probe_wait.get(account, self._probe_interval / 2)
        self._probe_wait[account] = min(previous * 2, ceiling) if again else self._probe_interval
        # The probe starts now (the account counts as paused from here on) but waits until the pause
        # is written: a probe that resumed first would have its "resumed" overwritten by "paused".
        recorded = asyncio.Event()
        self._start_probe(account, after=recorded)
        try:
            entry = self._consumers.pop(self._names.sync(account), None)
            if entry is not None:
                queue, tag = entry
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
            with contextlib.suppress(InfrastructureFault):
                await self._accounts.update_account(account, paused=True, reason=reason, status=status)
        finally:
            recorded.set()
        log.error("account.paused", account=account, status=status, error=reason)

    def _start_probe(self, account: str, *, after: asyncio.Event | None = None) -> None:
        """Probe ``account`` until it works again (first waiting for ``after``), then resume it."""
        probe = self._probe_until_usable(account, after)
        # A context of its own: started from a message's handler, the probe would otherwise log every
        # line with that message's ids (its correlation, message and record ids) for as long as it runs.
        self._paused[account] = asyncio.create_task(probe, name=f"probe-{account}", context=contextvars.Context())
        self._metrics.paused_accounts.set(len(self._paused))

    async def _probe_until_usable(self, account: str, after: asyncio.Event | None) -> None:
        me = self._paused.get(account)
        if after is not None:
            await after.wait()
        interval = self._probe_wait.get(account, self._probe_interval)
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self._probe(account)
            except Exception as exc:  # still unusable (or StackOne is down): keep waiting
                log.warning("account.still_paused", account=account, **describe(exc))
                interval = min(interval * 2, max(self._settings.probe_max_seconds, self._probe_interval))
                continue
            with contextlib.suppress(InfrastructureFault):
                await self._accounts.update_account(account, paused=False, reason=None, status=None)
            self._resumed[account] = time.time()
            self._breaker.reset(account)
            self._paused.pop(account, None)
            if self._db_pause is not None:  # resumed with the rest once the database works
                log.info("account.resumed", account=account)
                break
            try:
                await self._consume(self._names.sync(account))
            except Exception as exc:  # the broker is down: consumption resumes when probed again
                log.warning("account.resume_failed", account=account, **describe(exc))
                if me is not None:
                    self._paused[account] = me
                continue
            log.info("account.resumed", account=account)
            break
        self._paused.pop(account, None)
        self._metrics.paused_accounts.set(len(self._paused))

    # --- pausing everything while the database fails ---------------------------------------

    def _pause_database(self, exc: BaseException | None) -> None:
        if self._db_pause is not None or self._check_database is None or self._stopping:
            return
        self._db_pause = asyncio.create_task(
            self._while_database_fails(str(exc)), name="database-probe", context=contextvars.Context()
        )
        self._metrics.database_paused.set(1)

    async def _while_database_fails(self, error: str) -> None:
        """Consume nothing; probe the database, doubling the wait, until it commits a write again."""
        assert self._check_database is not None
        started = time.monotonic()
        ceiling = max(self._settings.probe_max_seconds, self._probe_interval)
        # Paused again soon after a probe said it works (a full disk: the probe writes no row): wait longer.
        again = self._db_resumed is not None and time.monotonic() - self._db_resumed < ceiling
        wait = self._db_wait = min(self._db_wait * 2, ceiling) if again else self._probe_interval
        try:
            consuming = list(self._consumers.values())
            self._consumers.clear()
            await asyncio.gather(*(_quietly(queue.cancel(tag)) for queue, tag in consuming))
            log.error("database.paused", error=error, queues=len(consuming), probe_in=wait)
            while not self._stopping:
                await asyncio.sleep(wait)
                try:
                    await self._check_database()
                    self._db_breaker.reset(DATABASE)
                    await self._start_consuming()  # reads each account's pause: the database again
                except Exception as exc:  # still failing (or RabbitMQ is down): keep waiting
                    wait = min(wait * 2, ceiling)
                    log.warning("database.still_failing", **describe(exc), probe_in=wait)
                    continue
                self._db_resumed = time.monotonic()
                log.info("database.resumed", paused_for=round(self._db_resumed - started, 3))
                break
        finally:
            self._db_pause = None
            self._metrics.database_paused.set(0)

    # --- shutdown -----------------------------------------------------------------------

    async def stop(self, *, drain_timeout: float) -> None:
        """Stop fetching, finish what is in hand (up to ``drain_timeout``), close channels.

        Messages not finished in time are never acked, so RabbitMQ redelivers them.
        """
        self._stopping = True
        await asyncio.gather(*(_quietly(queue.cancel(tag)) for queue, tag in self._consumers.values()))
        self._consumers.clear()
        for task in [*self._paused.values(), *self._background, *filter(None, [self._db_pause])]:
            task.cancel()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=drain_timeout)
            for task in pending:
                task.cancel()
        await asyncio.gather(*(_quietly(channel.close()) for channel in self._channels))
        self._channels.clear()


# A broker call made while stopping, or closing a channel given up, waits this long at most: with
# RabbitMQ gone, aio-pika's channels wait for a reconnection that may never come (the unacked
# messages return to their queues when the connection ends anyway).
STOP_CALL_SECONDS = 2.0


async def _quietly(call: Awaitable[object]) -> None:
    """Await a broker call whose outcome nothing depends on; a fault, or no answer in time, is let go."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(STOP_CALL_SECONDS):
            await call


async def _outcome(work: Awaitable[T]) -> tuple[T | None, BaseException | None]:
    """Run ``work``; what it returned, or the exception it raised. Cancellation propagates."""
    try:
        return await work, None
    except asyncio.CancelledError:
        raise
    except Exception as caught:  # every failure is settled; none crashes the worker
        return None, caught


def _context(job: Job) -> dict[str, Any]:
    context: dict[str, Any] = {
        "correlation_id": job.correlation_id,
        "message_id": job.message_id,
        "attempt": job.tries,  # every earlier try: the policy's count skips infrastructure faults
    }
    if job.event is not None:
        context.update(source=job.event.source, event_type=job.event.type)
    if job.sync is not None:
        context.update(account=job.sync.account, record_id=job.sync.record_id)
    return context


def _unreadable(message: AbstractIncomingMessage) -> Job:
    """A stand-in job for a message that could not be decoded (it is dead-lettered as it came)."""
    return Job(
        kind="event",
        message_id=message.message_id or "",
        correlation_id=message.correlation_id or "",
        attempt=0,
        received_at=time.time(),
        routing_key=message.routing_key or "",
    )
