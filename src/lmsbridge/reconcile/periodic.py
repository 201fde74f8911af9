"""The worker's periodic reconciliation: every ``reconcile.interval`` seconds, one worker at a time.

Each round, the worker that takes the database lease (``reconcile_lease``, renewed while the
pass runs) reconciles every source with a platform API, then checks every account's LMS; the
others skip the round. Only what is due is passed over: a source or an account whose last pass
(a worker's, or an operator's ``reconcile``) started less than 90 % of an interval ago is left
for a later round, so N workers make one pass per interval, not N, and a pass of one source by
hand does not put off the others. A worker's first round comes :data:`FIRST_ROUND_AFTER` after
it starts (or an interval, if shorter), later ones when the next source or account is due: a
fleet restarted more often than every interval still reconciles. An account with more than
:data:`LMS_BACKLOG` messages ready for it (in its sync queue, and in the intake queues of the
sources that push to it) is not checked that round (``reconcile.lms_deferred``) and stays due:
its LMS is about to change under the pass, whose reads would take the rate limit's share from
the writes draining the backlog, and whose index of every row there (about 350 bytes a record)
would come on top of the worker's memory while it drains. What the pass finds is queued like any
webhook (and any sync), so the running consumers do the
writes, within the rate limit: the LMS reads take a
:class:`~lmsbridge.stackone.ratelimit.SubBudget` of the key's budget, shared with every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.broker import Broker, BrokerSyncQueue, Names
from lmsbridge.errors import ConfigError, LmsbridgeError
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.reconcile.lms import USER_AGENT, listing_retry, lms_budget, lms_pass, pass_name, record
from lmsbridge.reconcile.platform import EventPublisher
from lmsbridge.reconcile.run import platform_pass, readable_sources
from lmsbridge.settings import Settings
from lmsbridge.stackone import Budget, StackOneClient
from lmsbridge.storage.reconcile import ReconcileStore

log = get_logger(__name__)
LEASE = "periodic"
FIRST_ROUND_AFTER = 60.0
"""Seconds from a worker's start to its first round (the worker settles first)."""
DUE_AFTER = 0.9
"""A source or account is due once its last pass started this share of an interval ago."""
LMS_BACKLOG = 1000
"""Messages ready for an account (its sync tasks, and the events at its sources' intake) above
which its LMS check waits for a later round."""


async def reconcile_periodically(
    settings: Settings,
    broker: Broker,
    engine: AsyncEngine,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    limiter: Budget,
) -> None:
    """Run forever (until cancelled): a round as soon as a source or an account is due, at most a
    ``reconcile.interval`` apart; never raises."""
    interval = settings.reconcile.interval
    if interval <= 0:
        return
    owner = uuid.uuid4().hex[:16]
    store = ReconcileStore(engine)
    try:
        wait = min(interval, FIRST_ROUND_AFTER)
        while True:
            await asyncio.sleep(wait)
            try:
                await reconcile_round(settings, store, broker, session, metrics, limiter, owner)
                wait = await _next_round_in(settings, store)
            except Exception as exc:  # a failed round is retried next round
                log.warning("reconcile.round_failed", error=str(exc), error_type=type(exc).__name__)
                wait = interval
    finally:
        await store.close()


def _names(settings: Settings) -> tuple[list[str], list[str]]:
    """The sources with a platform API, and the accounts (none without a StackOne key)."""
    try:
        sources = list(readable_sources(settings))
    except ConfigError:  # no source has a platform API: nothing to read there
        sources = []
    accounts = list(settings.accounts()) if settings.stackone.api_key.get_secret_value() else []
    return sources, accounts


async def _last_started(store: ReconcileStore) -> dict[str, float]:
    return {p.source: p.started_at for p in await store.passes()}


async def _next_round_in(settings: Settings, store: ReconcileStore) -> float:
    """Seconds until the next source or account is due (at least a tenth of an interval)."""
    interval = settings.reconcile.interval
    last = await _last_started(store)
    sources, accounts = _names(settings)
    names = [*sources, *map(pass_name, accounts)]
    due_at = min((last.get(n, 0.0) + interval * DUE_AFTER for n in names), default=math.inf)
    return min(interval, max(interval * 0.1, due_at - time.time()))


async def reconcile_round(
    settings: Settings,
    store: ReconcileStore,
    publisher: EventPublisher,
    session: aiohttp.ClientSession,
    metrics: Metrics,
    limiter: Budget,
    owner: str,
    *,
    backlog: int = LMS_BACKLOG,
) -> bool:
    """One round if this worker gets the lease: the platforms, then the LMS accounts, that are due
    (see the module's docstring; ``backlog``: :data:`LMS_BACKLOG`). False when skipped: the lease
    elsewhere, or nothing due."""
    lease = settings.reconcile.lease_seconds
    now = time.time()
    if not await store.take_lease(LEASE, owner, now, lease):
        return False
    renewer = asyncio.create_task(_renew(store, owner, lease), name="reconcile-lease")
    try:
        last = await _last_started(store)
        since = now - settings.reconcile.interval * DUE_AFTER
        every_source, every_account = _names(settings)
        sources = [s for s in every_source if last.get(s, 0.0) <= since]
        accounts = [a for a in every_account if last.get(pass_name(a), 0.0) <= since]
        if not sources and not accounts:
            return False  # another worker, or an operator, passed over everything a moment ago
        if sources:
            chosen = readable_sources(settings, sources)
            await platform_pass(settings, chosen, store=store, publisher=publisher, session=session, metrics=metrics)
        if accounts and isinstance(publisher, Broker):
            accounts = await _not_backlogged(settings, publisher, accounts, backlog)
        if accounts and isinstance(publisher, Broker):  # none left when every one was backlogged
            calls = [0]

            def count(*_: object) -> None:
                calls[0] += 1

            budget = lms_budget(settings, limiter)
            client = StackOneClient(
                session, settings.stackone, user_agent=USER_AGENT, limiter=budget, on_response=count
            )
            for account in accounts:
                before = calls[0]
                report = await lms_pass(
                    account,
                    store=store,
                    stackone=client,
                    queue=BrokerSyncQueue(publisher),
                    retry=listing_retry(settings.reconcile),
                )
                report.stackone_calls = calls[0] - before
                await record(store, report, dry_run=False, metrics=metrics)
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        with contextlib.suppress(LmsbridgeError):
            await store.release_lease(LEASE, owner)
    return True


async def _not_backlogged(settings: Settings, broker: Broker, accounts: list[str], backlog: int) -> list[str]:
    """``accounts`` less those with more than ``backlog`` messages ready for them (each logged): in
    their sync queue, and in the intake queues of the sources that push to them."""
    names = Names(settings.broker.prefix)
    queues = {f"sync {a}": names.sync(a) for a in accounts}
    queues.update({f"intake {s}": names.intake(s) for s in broker.sources})
    depths = await broker.depths(queues)
    kept = []
    for account in accounts:
        feeding = [s for s, src in settings.sources.items() if account in src.accounts and s in broker.sources]
        ready = depths[f"sync {account}"] + sum(depths[f"intake {s}"] for s in feeding)
        if ready > backlog:
            log.info("reconcile.lms_deferred", account=account, ready=ready, above=backlog)
        else:
            kept.append(account)
    return kept


async def _renew(store: ReconcileStore, owner: str, lease: float) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        with contextlib.suppress(LmsbridgeError):
            await store.take_lease(LEASE, owner, time.time(), lease)
