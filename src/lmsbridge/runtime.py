"""The composition root: builds every component from :class:`Settings` and runs them.

``serve`` runs the receiver, ``worker`` the consumers, ``run`` both in one process.
Shutdown (SIGTERM, Ctrl-C) is ordered so nothing accepted is lost or half-written:
the receiver turns not-ready, stops accepting and finishes requests in flight; the
consumer stops fetching, finishes or returns what it holds; then connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge import __version__
from lmsbridge.broker import Broker, BrokerSyncQueue, Consumer, Names
from lmsbridge.budget import SharedBudget, holder_name, open_shared_budget
from lmsbridge.errors import BrokerUnavailable, InfrastructureFault
from lmsbridge.lanes import in_background
from lmsbridge.logs import get_logger
from lmsbridge.metrics import EVENT_STAGES, Metrics
from lmsbridge.people import USER_NOT_FOUND, People
from lmsbridge.ports import PlatformPort
from lmsbridge.receiver import ReceiverRunner, create_app, mark_shutting_down
from lmsbridge.service import FRESH_INTENT_SECONDS, Service
from lmsbridge.settings import Settings
from lmsbridge.stackone import SharedRateLimiter, StackOneClient
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.ledger import LedgerStore
from lmsbridge.storage.migrate import schema_behind, upgrade_when_reachable
from lmsbridge.storage.shared import fault_name
from lmsbridge.vendors import LimeplateApi

log = get_logger(__name__)

RUN_MAX_IN_FLIGHT = 64
"""Webhooks handled at once under `run` unless ``receiver.max_in_flight`` says otherwise."""

USER_AGENT = f"lmsbridge/{__version__}"
ADMIT_SHARE = 0.25  # of worker.sync_lease_seconds: the longest new work may expect to wait for the budget
LEDGER_INTERVAL = 2.0  # seconds between writes of this process's counters (status's system-wide ledger)
DEPTH_READ_TIMEOUT = 10.0  # seconds a read of the queue depths may take (RabbitMQ unreachable: it may never end)


class Runtime:
    """Everything one lmsbridge process runs, started and stopped in order."""

    def __init__(self, settings: Settings, *, receiver: bool, worker: bool, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.with_receiver = receiver
        self.with_worker = worker
        self.metrics = metrics or Metrics()
        role = "+".join(r for r, on in (("receiver", receiver), ("worker", worker)) if on)
        self.broker = Broker.configured(settings, name=f"lmsbridge-{role}")
        self.repo: Repository | None = None
        self.session: aiohttp.ClientSession | None = None
        self.consumer: Consumer | None = None
        self.service: Service | None = None
        self.people: People | None = None
        self.limiter: SharedRateLimiter | None = None
        self._budget: SharedBudget | None = None
        self._ledger: LedgerStore | None = None
        self._ledger_engine: AsyncEngine | None = None
        self._process = holder_name("+".join(r for r, on in (("receiver", receiver), ("worker", worker)) if on))
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []
        self.port: int | None = None
        self._stopping = False
        self._budget_wait = {
            background: self.metrics.budget_wait_seconds.labels(lane="background" if background else "live")
            for background in (False, True)
        }

    # --- start --------------------------------------------------------------------------

    async def start(self, *, wait: float | None = None) -> None:
        """Start the configured parts. The worker waits up to ``wait`` seconds (default a minute) for
        the database, then as long again for the broker; the receiver waits for neither."""
        if self.with_worker:
            url = self.settings.database_url.get_secret_value()
            self.repo = Repository(create_engine(url))
            migrating = create_engine(url, bounded=False)  # a migration may take longer than a statement may
            try:
                await upgrade_when_reachable(migrating, wait=wait if wait is not None else 60.0)
            finally:
                await migrating.dispose()
        await self.broker.start(wait=wait if wait is not None else (60.0 if self.with_worker else None))
        if self.with_worker:
            await self._start_worker()
        if self.with_receiver:
            await self._start_receiver()
        self._start_ledger()

    def _start_ledger(self) -> None:
        """Write this process's event counters to the database every few seconds (``status`` adds them up)."""
        if self.repo is not None:
            engine = self.repo.engine
        else:  # a receiver alone: an engine of its own, only for its counters
            engine = self._ledger_engine = create_engine(self.settings.database_url.get_secret_value())
        self._ledger = LedgerStore(engine)
        self._background.append(asyncio.create_task(self._write_ledger(engine), name="ledger"))

    def _counts(self) -> dict[str, int]:
        return {stage: int(self.metrics.count(stage)) for stage in EVENT_STAGES}

    async def _write_ledger(self, engine: AsyncEngine) -> None:
        """Never raises: a database that fails delays the counts, never the webhooks or the syncs."""
        assert self._ledger is not None
        failing = False
        while True:
            await asyncio.sleep(LEDGER_INTERVAL)
            try:
                await self._ledger.save(self._process, self._counts())
                self.metrics.ledger_written.set(time.time())
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("ledger.write_failed", error=fault_name(exc), **await _schema_hint(engine))
                failing = True

    async def _stop_ledger(self) -> None:
        """The last counts, marked final; then the store's connection."""
        if self._ledger is None:
            return
        try:
            await self._ledger.save(self._process, self._counts(), final=True)
        except Exception as exc:
            log.warning("ledger.write_failed", error=fault_name(exc), final=True)
        await self._ledger.close()
        if self._ledger_engine is not None:
            await self._ledger_engine.dispose()

    async def _start_worker(self) -> None:
        assert self.repo is not None
        s = self.settings
        self.session = aiohttp.ClientSession()
        # Every process using the API key draws on one budget in the database (issue 14): no share to set.
        self._budget = open_shared_budget(s, self.repo.engine, role="worker")
        self.limiter = self._budget.limiter
        await self.limiter.learn_sharers()
        stackone = StackOneClient(
            self.session,
            s.stackone,
            user_agent=USER_AGENT,
            limiter=self.limiter,
            on_response=self._observe_stackone,
            on_budget_wait=self._observe_budget_wait,
        )
        platforms: dict[str, PlatformPort] = {}
        for name, src in s.sources.items():
            if src.platform == "limeplate" and src.api_base_url and src.api_key is not None:
                platforms[name] = LimeplateApi(
                    self.session,
                    src.api_base_url,
                    src.api_key,
                    user_agent=USER_AGENT,
                    on_skipped=functools.partial(self.metrics.members_skipped, name),
                )
                self.metrics.members_skipped(name, 0)  # exported at 0 from the start: increase() sees the first
        self.people = People(
            self.repo.directory, self.repo.accounts, stackone, refresh_after=s.stackone.directory_refresh_seconds
        )
        self.service = Service(
            intake=self.repo.intake,
            leases=self.repo.leases,
            content=self.repo.content,
            stackone=stackone,
            queue=BrokerSyncQueue(self.broker),
            accounts_of={name: list(src.accounts) for name, src in s.sources.items()},
            platforms=platforms,
            people=self.people,
            lease_seconds=s.worker.sync_lease_seconds,
            fresh_intent_seconds=min(FRESH_INTENT_SECONDS, (s.worker.sync_lease_seconds - s.stackone.timeout) / 2),
            delete_superseded=s.stackone.delete_superseded_completions,
        )
        self.consumer = Consumer(
            self.broker,
            self.service,
            s.broker,
            self.metrics,
            accounts=self.repo.accounts,
            probe=stackone.probe,
            check_database=self.repo.check_writes,
            probe_interval=s.worker.pause_probe_seconds,
            inline_limit=s.worker.inline_sync_limit,
            admit=self._admit,
        )
        await self.consumer.start()
        self._background += [
            asyncio.create_task(self._refresh_directories(), name="directory-refresh"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        if s.reconcile.interval > 0:  # issue 12: one pass per interval across workers (a lease in the database)
            from lmsbridge.reconcile.periodic import reconcile_periodically

            pass_ = reconcile_periodically(s, self.broker, self.repo.engine, self.session, self.metrics, self.limiter)
            self._background.append(asyncio.create_task(pass_, name="reconcile"))
        if not self.with_receiver and s.worker.metrics_port:
            self._metrics_runner = await _serve_metrics(
                self.metrics, s.receiver.host, s.worker.metrics_port, ready=self._worker_ready
            )

    async def _start_receiver(self) -> None:
        s = self.settings
        checks: dict[str, Any] = {"broker": self._broker_ready, "publishing": self._publishing}
        if self.repo is not None:
            checks["database"] = self.repo.ping
        # Under `run` the worker shares this event loop: bound what a flood of webhooks can take of it.
        in_flight = s.receiver.max_in_flight or (RUN_MAX_IN_FLIGHT if self.with_worker else None)
        self.app = create_app(s.receiver, s.sources, self.broker, self.metrics, checks=checks, max_in_flight=in_flight)
        self._runner = ReceiverRunner(self.app, shutdown_timeout=s.receiver.shutdown_grace, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, s.receiver.host, s.receiver.port, backlog=1024, reuse_port=s.receiver.reuse_port or None
        )
        await _listen(site, "receiver", s.receiver.host, s.receiver.port)
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else s.receiver.port
        log.info("receiver.listening", host=s.receiver.host, port=self.port)

    async def _worker_ready(self) -> bool:
        """The worker's readiness: broker connected, database answering (and not paused for), not stopping."""
        if self._stopping or not self.broker.connected or self.repo is None:
            return False
        if self.consumer is not None and self.consumer.database_paused:
            return False
        try:
            return bool(await asyncio.wait_for(self.repo.ping(), 5.0))
        except Exception:
            return False

    async def _broker_ready(self) -> bool:
        return self.broker.connected

    async def _publishing(self) -> bool:
        """False while RabbitMQ blocks publishers (a memory or disk alarm): no webhook can be accepted."""
        return not self.broker.blocked

    def _admit(self) -> AbstractAsyncContextManager[None]:
        """Hold a new job while this worker's StackOne requests would wait over a quarter of the sync lease."""
        if self.limiter is None:
            return contextlib.nullcontext()
        return self.limiter.admitted(self.settings.worker.sync_lease_seconds * ADMIT_SHARE)

    def _observe_budget_wait(self, seconds: float) -> None:
        # Runs in the waiting request's task: its lane is the job's (lmsbridge.lanes).
        self._budget_wait[in_background()].observe(seconds)

    def _observe_stackone(self, operation: str, status: int, seconds: float) -> None:
        # Runs inside the consumer's task, so the line carries its correlation id and message id.
        (log.debug if 200 <= status < 300 else log.info)(
            "stackone.response", operation=operation, status=status, duration=seconds
        )
        self.metrics.stackone_response(operation, status, seconds)
        if self.limiter is not None:
            snap = self.limiter.snapshot()
            self.metrics.rate_waiting.set(snap["waiting"])
            self.metrics.rate_granted.set(snap["granted_total"])

    # --- background work ----------------------------------------------------------------

    async def _refresh_directories(self) -> None:
        """Refresh every account's user directory, then retry people parked as unknown."""
        assert self.people is not None
        assert self.service is not None
        interval = self.settings.stackone.directory_refresh_seconds
        while True:
            await asyncio.sleep(interval)
            for account in self.settings.accounts():
                try:
                    await self.people.refresh(account)
                    n = await self.service.unpark(account, USER_NOT_FOUND, correlation_id=f"refresh-{account}")
                    log.info("directory.refreshed", account=account, unparked=n)
                except Exception as exc:  # a failed refresh is retried next round
                    log.warning("directory.refresh_failed", account=account, error=str(exc))

    async def _housekeeping(self) -> None:
        """Forget old message ids and publish queue depths."""
        assert self.repo is not None
        retention = timedelta(days=self.settings.worker.inbox_retention_days)
        failing = reading_failed = False
        while True:
            try:
                await self.repo.intake.prune_inbox(datetime.now(UTC) - retention)
                failing = False
            except Exception as exc:  # tried again in 15 s; said once, not every 15 s
                if not failing:
                    log.warning("inbox.prune_failed", error=fault_name(exc.__cause__ or exc))
                failing = True
            try:
                await self.update_queue_depths()
                reading_failed = False
            except Exception as exc:  # the depths are withdrawn meanwhile; said once, not every 15 s
                if not reading_failed:
                    log.warning("queue_depth.read_failed", error=type(exc).__name__)
                reading_failed = True
            await asyncio.sleep(15.0)

    async def update_queue_depths(self, *, timeout: float = DEPTH_READ_TIMEOUT) -> dict[str, int]:
        """Read the depth of every queue into the ``queue_depth`` gauge, and when into
        ``queue_depth_read``; returns them.

        A read that fails (RabbitMQ unreachable, or no answer within ``timeout``) withdraws every
        depth and raises: a depth last read before the fault would be shown as current.
        """
        names = self.broker.topology.names if self.broker.topology else None
        try:
            if names is None or self.broker.connection is None:
                raise BrokerUnavailable("RabbitMQ is not connected")
            async with asyncio.timeout(timeout):
                depths = await self._read_queue_depths(names)
        except Exception:
            self.metrics.queue_depth.clear()
            raise
        for queue_name, depth in depths.items():
            self.metrics.queue_depth.labels(queue=queue_name).set(depth)
        self.metrics.queue_depth_read.set(time.time())
        return depths

    async def _read_queue_depths(self, names: Names) -> dict[str, int]:
        depths: dict[str, int] = {}
        channel = await self.broker.channel()  # not on the publishing connection, which an alarm blocks
        try:
            levels = len(self.settings.broker.retry_delays)
            for queue_name in names.queues(self.broker.sources, self.broker.accounts, levels):
                queue = await channel.declare_queue(queue_name, passive=True)
                depths[queue_name] = queue.declaration_result.message_count or 0
        finally:
            with contextlib.suppress(Exception):  # RabbitMQ gone: a close would wait for its return
                async with asyncio.timeout(2.0):
                    await channel.close()
        return depths

    # --- stop ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop in order: receiver (drain requests), consumer (drain messages), connections."""
        self._stopping = True
        if self.app is not None:
            mark_shutting_down(self.app)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.consumer is not None:
            await self.consumer.stop(drain_timeout=self.settings.worker.drain_timeout)
        await cancel_all(self._background)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        await self._stop_ledger()
        await self.broker.close()
        if self.session is not None:
            await self.session.close()
        if self._budget is not None:
            await self._budget.close()
        if self.repo is not None:
            await self.repo.close()
        log.info("lmsbridge.stopped")


async def cancel_all(tasks: list[asyncio.Task[None]], *, every: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again every ``every`` seconds a
    task that goes on.

    A loop can swallow its cancellation: a library call under ``contextlib.suppress(Exception)``
    that turns the ``CancelledError`` into an error of its own. The loop then goes back to its
    sleep, and awaiting it once cancelled waited forever: a stop that never ended (seen once in
    ``tests/pipeline/test_resilience.py`` after a RabbitMQ restart: the housekeeping loop, reading
    queue depths under ``suppress(Exception)``, was back at its 15 s sleep with its cancellation
    spent). Cancelled again, it ends at its next ``await``.
    """
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=every)
    for task in tasks:  # each task's exception retrieved (none matters at stop)
        if not task.cancelled():
            task.exception()


async def _serve_metrics(
    metrics: Metrics, host: str, port: int, *, ready: Callable[[], Awaitable[bool]]
) -> web.AppRunner:
    """The worker's own small HTTP server: ``/metrics``, ``/healthz`` (alive) and ``/readyz``
    (broker connected, database answering, not shutting down), for HTTP probes."""

    async def view(_: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.StreamResponse:
        ok = await ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await _listen(web.TCPSite(runner, host, port), "worker metrics", host, port)
    except InfrastructureFault:
        await runner.cleanup()
        raise
    return runner


async def _listen(site: web.TCPSite, what: str, host: str, port: int) -> None:
    """Start ``site``; a socket it cannot have is one line naming ``what``, the address and why."""
    try:
        await site.start()
    except OSError as exc:  # the port taken, the address not this host's, a port below 1024
        # socket.gaierror's errno is the resolver's (negative): its own text says it
        why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or type(exc).__name__
        raise InfrastructureFault(f"{what}: cannot listen on {host}:{port}: {why}") from exc


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""The signals that stop a running process gracefully."""


async def run_until_signal(runtime: Runtime) -> None:
    """Start ``runtime``, wait for SIGTERM, SIGINT or SIGHUP, then stop it gracefully.

    SIGHUP (the terminal that started it closed, or ``kill -HUP`` expecting a reload there is
    not) stops it like SIGTERM: by default it killed the process on the spot, cutting requests and
    syncs off. A signal while it is still starting (the worker waiting for RabbitMQ, up to a minute)
    ends the start and stops what had started, rather than waiting for the start to finish first.
    """
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.create_task(runtime.start(), name="start")
    signalled = asyncio.create_task(stop.wait(), name="signal")
    await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("lmsbridge.stopping", starting=True, signal=received[0])
        await cancel_all([starting])
        await runtime.stop()
        return
    signalled.cancel()
    if starting.exception() is not None:
        # A start that failed ends the process with its error, once what had started is stopped:
        # left running, the broker's connection retries its connect when cancelled at exit, and
        # the process hung there instead of exiting (seen with the receiver's port taken).
        try:
            await runtime.stop()
        except Exception as exc:  # the start's error is the one to report
            log.warning("lmsbridge.stop_failed", error=type(exc).__name__)
    await starting
    _freeze_startup_objects()
    log.info("lmsbridge.started", receiver=runtime.with_receiver, worker=runtime.with_worker, version=__version__)
    await stop.wait()
    log.info("lmsbridge.stopping", signal=received[0])
    await runtime.stop()


GC_THRESHOLDS = (50_000, 10, 10)
"""The garbage collector's thresholds once started (Python's defaults: 700, 10, 10)."""


def _freeze_startup_objects() -> None:
    """Keep what exists once the process started out of the garbage collector's full collections.

    Modules, schemas, settings, compiled statements and connections live as long as the process;
    a full collection traversed them all each time: measured in ``bench/bench_reconcile.py``, the
    worker's one full collection during a pass stopped it for 100 ms, with live syncs waiting. What
    is garbage already is collected first, so that nothing dead is kept.

    Then the young generation is collected every 50,000 net allocations instead of 700
    (:data:`GC_THRESHOLDS`). An event's handling allocates thousands of short-lived containers
    (coroutines, futures, frames, rows); most die by reference count within the event, but a
    collection traverses those still in flight (up to a prefetch of events): at 700 every few
    events, at 10,000 every ~150, each 4-6 ms. Timed with ``gc.callbacks`` in a worker draining
    20,000 queued events: ~660 ms of collections at 10,000 (~130 of them), 40 ms at 50,000 (2,
    the longest 21 ms), peak RSS 117 -> 120 MB; end to end at 1,100 a second offered, alternating,
    1,085 / 1,069 / 1,046 LMS writes a second against 1,048 / 1,057 / 1,001. The older
    generations' thresholds stay as they were.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.debug("gc.frozen", objects=gc.get_freeze_count())


async def _schema_hint(engine: AsyncEngine) -> dict[str, str]:
    """Why counters cannot be written, when the reason is a schema never migrated (a receiver alone)."""
    try:
        behind = await asyncio.wait_for(schema_behind(engine), LEDGER_INTERVAL)
    except Exception:  # the database itself is down: the error says enough
        return {}
    if behind is None:
        return {}
    return {
        "schema": behind,
        "hint": "the database is not migrated: run 'lmsbridge migrate' (or start a worker, which migrates); "
        "until then this process's counts are missing from 'lmsbridge status'",
    }
