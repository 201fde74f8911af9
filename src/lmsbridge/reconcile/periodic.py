"""The worker's periodic reconciliation: every ``reconcile.interval`` seconds, one worker at a time.

Each round, the worker that takes the database lease (``reconcile_lease``, renewed while the
pass runs) reconciles every source with a platform API, then checks every account's LMS;
the others skip the round, as does a worker whose round comes when another's pass started
less than 90 % of an interval ago (so N workers make one pass per interval, not N). What the
pass finds is queued like any webhook (and any sync), so the running consumers do the
writes, within the rate limit: the LMS reads take a
:class:`~lmsbridge.stackone.ratelimit.SubBudget` of the key's budget, shared with every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.broker import Broker, BrokerSyncQueue
from lmsbridge.errors import ConfigError, LmsbridgeError
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.reconcile.lms import USER_AGENT, lms_budget, lms_pass, record
from lmsbridge.reconcile.platform import EventPublisher
from lmsbridge.reconcile.run import platform_pass, readable_sources
from lmsbridge.settings import Settings
from lmsbridge.stackone import Budget, StackOneClient
from lmsbridge.storage.reconcile import ReconcileStore

log = get_logger(__name__)
LEASE = "periodic"


async def reconcile_periodically(
    settings: Settings,
    broker: Broker,
    engine: AsyncEngine,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    limiter: Budget,
) -> None:
    """Run forever (until cancelled): a round every ``reconcile.interval`` seconds; never raises."""
    interval = settings.reconcile.interval
    if interval <= 0:
        return
    owner = uuid.uuid4().hex[:16]
    store = ReconcileStore(engine)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await reconcile_round(settings, store, broker, session, metrics, limiter, owner)
            except Exception as exc:  # a failed round is retried next round
                log.warning("reconcile.round_failed", error=str(exc), error_type=type(exc).__name__)
    finally:
        await store.close()


async def reconcile_round(
    settings: Settings,
    store: ReconcileStore,
    publisher: EventPublisher,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    limiter: Budget,
    owner: str,
) -> bool:
    """One round if this worker gets the lease and no worker ran one within the interval: platforms,
    then LMS accounts. False when skipped."""
    lease = settings.reconcile.lease_seconds
    now = time.time()
    if not await store.take_lease(LEASE, owner, now, lease):
        return False
    renewer = asyncio.create_task(_renew(store, owner, lease), name="reconcile-lease")
    try:
        latest = max((p.started_at for p in await store.passes()), default=0.0)
        if latest > now - settings.reconcile.interval * 0.9:
            return False  # another worker ran this round's pass a moment ago
        with contextlib.suppress(ConfigError):  # no source has a platform API: nothing to read there
            sources = readable_sources(settings)
            await platform_pass(settings, sources, store=store, publisher=publisher, session=session, metrics=metrics)
        if settings.stackone.api_key.get_secret_value() and isinstance(publisher, Broker):
            calls = [0]

            def count(*_: object) -> None:
                calls[0] += 1

            budget = lms_budget(settings, limiter)
            client = StackOneClient(
                session, settings.stackone, user_agent=USER_AGENT, limiter=budget, on_response=count
            )
            for account in settings.accounts():
                before = calls[0]
                report = await lms_pass(account, store=store, stackone=client, queue=BrokerSyncQueue(publisher))
                report.stackone_calls = calls[0] - before
                await record(store, report, dry_run=False, metrics=metrics)
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        with contextlib.suppress(LmsbridgeError):
            await store.release_lease(LEASE, owner)
    return True


async def _renew(store: ReconcileStore, owner: str, lease: float) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        with contextlib.suppress(LmsbridgeError):
            await store.take_lease(LEASE, owner, time.time(), lease)
