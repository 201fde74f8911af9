"""``lmsbridge reconcile``: settings in, exit code out (0 finished, 1 could not finish, 2 bad settings).

The platform side reads each chosen source's list API and queues what drifted to the
source's intake queue (:mod:`.platform`); ``--lms`` checks that what lmsbridge recorded as
written is in the LMS (:mod:`.lms`). Both are also what the worker's periodic pass runs.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import uuid
from collections.abc import Sequence

import aiohttp

from lmsbridge import __version__
from lmsbridge.broker import Broker, Names
from lmsbridge.errors import BrokerUnavailable, ConfigError, InfrastructureFault
from lmsbridge.metrics import Metrics
from lmsbridge.ops import count_requeued
from lmsbridge.reconcile.backpressure import IntakeBackpressure
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.reconcile.findings import SourceReport
from lmsbridge.reconcile.platform import EventPublisher, PlatformPass, Progress
from lmsbridge.reconcile.report import observe, print_json, print_table, progress_bar, summary
from lmsbridge.settings import Settings, SourceSettings
from lmsbridge.stackone.ratelimit import RateLimiter
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import require_current_schema
from lmsbridge.storage.reconcile import ReconcileStore

USER_AGENT = f"lmsbridge/{__version__} (reconcile)"


def readable_sources(settings: Settings, names: Sequence[str] = ()) -> dict[str, SourceSettings]:
    """The sources to reconcile: those named (each must have its platform API configured), else all
    configured sources that have one. Raises :class:`ConfigError` naming the key otherwise."""
    if names:
        chosen: dict[str, SourceSettings] = {}
        for name in names:
            src = settings.sources.get(name)
            if src is None:
                raise ConfigError(f"config: sources.{name}: no such source")
            if not src.api_base_url or src.api_key is None:
                raise ConfigError(
                    f"config: sources.{name}.api_base_url: reconcile needs the platform's API (and api_key)"
                )
            chosen[name] = src
        return chosen
    chosen = {n: s for n, s in settings.sources.items() if s.api_base_url and s.api_key is not None}
    if not chosen:
        raise ConfigError("config: sources: no source has api_base_url and api_key to reconcile with")
    return chosen


def budget_per_minute(settings: Settings) -> float:
    """Reconciliation's share of the key's StackOne budget, in requests per minute (the pace it feeds events)."""
    return max(1.0, settings.stackone.rate_limit_per_minute * settings.reconcile.budget_share * 0.99)


async def platform_pass(
    settings: Settings,
    sources: dict[str, SourceSettings],
    *,
    store: ReconcileStore,
    publisher: EventPublisher | None,
    session: aiohttp.ClientSession,
    progress: Progress | None = None,
    metrics: Metrics | None = None,
) -> list[SourceReport]:
    """Reconcile ``sources`` one after the other; every pass is logged, counted and (unless dry) kept."""
    per_minute = budget_per_minute(settings)
    pacer = RateLimiter(per_minute, burst=max(1.0, per_minute / 600)) if publisher is not None else None
    backpressure = (
        IntakeBackpressure(publisher, Names(settings.broker.prefix)) if isinstance(publisher, Broker) else None
    )
    runner = PlatformPass(
        store=store,
        publisher=publisher,
        accounts_of={n: list(s.accounts) for n, s in settings.sources.items()},
        pacer=pacer,
        backpressure=backpressure,
        progress=progress,
        members_skipped=metrics.members_skipped if metrics is not None else None,
        queued=functools.partial(metrics.stage, "requeued") if metrics is not None else None,
    )
    correlation_id = f"reconcile-{uuid.uuid4().hex[:12]}"
    reports: list[SourceReport] = []
    for name, src in sources.items():
        assert src.api_base_url is not None
        assert src.api_key is not None
        client = PlatformClient(session, src.api_base_url, src.api_key, settings.reconcile, user_agent=USER_AGENT)
        started = time.time()
        report = await runner.run(name, src, client, correlation_id)
        observe(metrics, report, finished_at=time.time())
        if publisher is not None:
            with contextlib.suppress(InfrastructureFault):  # the figures are printed and logged anyway
                await store.record_pass(
                    name,
                    started_at=started,
                    duration=report.duration,
                    outcome="finished" if report.finished else "stopped",
                    findings=report.as_dict(),
                    error=report.error,
                )
        reports.append(report)
    if backpressure is not None:
        with contextlib.suppress(Exception):
            await backpressure.close()
    return reports


async def reconcile_command(
    settings: Settings,
    *,
    sources: Sequence[str] = (),
    dry_run: bool = False,
    as_json: bool = False,
    lms: bool = False,
    account: str | None = None,
) -> int:
    """The ``reconcile`` subcommand; returns its exit code (2 with one line naming the key for bad
    settings, or the option that does not apply: ``--source`` with ``--lms``, ``--account`` without)."""
    misplaced = "--source does not apply with --lms" if lms and sources else None
    if account is not None and not lms:
        misplaced = "--account needs --lms (the platform pass reads sources, not accounts)"
    if misplaced:
        print(f"lmsbridge: reconcile: {misplaced}", file=sys.stderr)
        return 2
    if lms:
        from lmsbridge.reconcile.lms import lms_command

        return await lms_command(settings, account=account, dry_run=dry_run, as_json=as_json)
    try:
        chosen = readable_sources(settings, sources)
    except ConfigError as exc:
        print(f"lmsbridge: {exc}", file=sys.stderr)
        return 2
    engine = create_engine(settings.database_url.get_secret_value())
    store = ReconcileStore(engine)
    broker: Broker | None = None
    metrics = Metrics()  # this command's counts: what it queued goes to the delivery ledger at the end
    try:
        await require_current_schema(engine)
        if not dry_run:
            broker = Broker.configured(settings, name="lmsbridge-reconcile")
            try:
                await broker.start(wait=15.0)
            except BrokerUnavailable as exc:
                print(f"lmsbridge: reconcile: {exc}", file=sys.stderr)
                return 1
        async with aiohttp.ClientSession() as session:
            with progress_bar(not as_json) as bar:
                reports = await platform_pass(
                    settings, chosen, store=store, publisher=broker, session=session, progress=bar, metrics=metrics
                )
    finally:
        if broker is not None:
            await broker.close()
        await store.close()
        await engine.dispose()
        await count_requeued(settings, "reconcile", int(metrics.count("requeued")))
    if as_json:
        print_json(summary(reports) | {"dry_run": dry_run})
    else:
        print_table(reports, dry_run=dry_run)
    return 0 if all(r.finished for r in reports) else 1
