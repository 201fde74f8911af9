"""The LMS side: what lmsbridge recorded as written on an account is really there.

Reads down in this order, per account:

1. the account's known people, and the (record, account) rows lmsbridge holds there, streamed
   into a compact :class:`~lmsbridge.reconcile.lms_index.AccountIndex`;
2. the account's assignments and completions through StackOne's cross-user lists
   (``GET /unified/lms/assignments``, ``/completions``, paged with ``next``), each row noted in
   the index as it is read, never kept; narrowed with ``filter[updated_after]`` to a day before
   lmsbridge's first write there, through a :class:`~lmsbridge.stackone.ratelimit.SubBudget` of
   ``reconcile.budget_share``; a page failing transiently is asked again with its cursor
   (:func:`listing_retry`);
3. a row marked written whose (person, learning object) is absent from the LMS (for a completion:
   whose completion as written, result, score and time, is absent) goes back to
   pending, only that step (``reopen``), and one sync task is queued for it: the workers
   write it again under the usual lease, rate limit and write-ahead intent (``REOPENED``: each
   create lists the person's rows first). A row the LMS lists
   without its user id or learning object reference is skipped and counted; a write it may be is
   ``unverified``, neither missing nor reopened;
4. a write in the LMS for one of lmsbridge's learning objects that lmsbridge has no record
   of is reported, never touched.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import aiohttp

from lmsbridge import __version__
from lmsbridge.broker import Broker, BrokerSyncQueue
from lmsbridge.budget import open_shared_budget
from lmsbridge.errors import BrokerUnavailable, InfrastructureFault, LmsbridgeError
from lmsbridge.lanes import lane
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.reconcile.findings import LMS_ASSIGNMENT_MISSING, LMS_COMPLETION_MISSING, LMS_UNKNOWN_WRITE
from lmsbridge.reconcile.lms_index import AccountIndex
from lmsbridge.reconcile.platform import Progress
from lmsbridge.reconcile.report import print_json, progress_bar
from lmsbridge.settings import ReconcileSettings, Settings
from lmsbridge.stackone import ReadRetry, StackOneClient
from lmsbridge.stackone.ratelimit import Budget, SubBudget
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import require_current_schema
from lmsbridge.storage.reconcile import ReconcileStore

log = get_logger(__name__)

USER_AGENT = f"lmsbridge/{__version__} (reconcile)"
MARGIN = timedelta(days=1)  # clocks differ: read a day further back than our first write
SAMPLE = 20  # unknown writes listed by name in the report
_KINDS = (LMS_ASSIGNMENT_MISSING, LMS_COMPLETION_MISSING, LMS_UNKNOWN_WRITE)


class SyncQueue(Protocol):
    """Where a reopened row's sync goes (the broker's sync queue of the account)."""

    async def queue_sync(self, record_id: int, account: str, *, correlation_id: str, received_at: float) -> None: ...


class _LmsLister(Protocol):
    def iter_account_rows(self, account: str, kind: str, *, updated_after: Any = None, retry: ReadRetry) -> Any: ...


@dataclass
class LmsReport:
    """The figures of one account's LMS pass.

    Every record with a write recorded as done is one of ``written_checked`` (compared with the
    LMS's lists), ``unknown_people`` (its person is not in the directory: no LMS user id to look
    for, so not compared) or ``unverified`` (not listed, but an unreadable row may be it): their
    sum is :attr:`not_checked`, and a pass with any is not "in step".
    """

    account: str
    written_checked: int = 0
    lms_assignments: int = 0
    lms_completions: int = 0
    drift: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    reopened: int = 0
    queued: int = 0
    unknown_people: int = 0
    unreadable_rows: int = 0
    unverified: int = 0
    unknown_writes: list[dict[str, str]] = field(default_factory=list)
    stackone_calls: int = 0
    duration: float = 0.0
    finished: bool = False
    error: str | None = None

    @property
    def not_checked(self) -> int:
        """Written records the pass could not compare with the LMS."""
        return self.unknown_people + self.unverified

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON and the database."""
        return asdict(self) | {"not_checked": self.not_checked}


async def _listing(
    stackone: _LmsLister,
    account: str,
    kind: str,
    since: Any,
    index: AccountIndex,
    retry: ReadRetry,
    progress: Progress | None = None,
) -> int:
    """Note every ``kind`` row on the account in ``index``; the readable rows read. A page whose
    request fails transiently is asked again (``retry``: the same cursor, never the listing from
    its first page); one that still fails stops the pass."""
    one = kind.removesuffix("s")
    read = 0
    async for rows in stackone.iter_account_rows(account, kind, updated_after=since, retry=retry):
        for row in rows:
            user_id, ref = _text(row.get("user_id")), _text(row.get("learning_object_external_reference"))
            read += bool(user_id and ref)
            index.listed(one, user_id, ref, row)
        if progress is not None:
            progress(f"{account}: LMS {kind}", read, None)
    return read


def _text(value: Any) -> str | None:
    """A row's id or reference as text; None when the LMS left it out (null, empty)."""
    return str(value) if value is not None and value != "" else None


async def lms_pass(
    account: str,
    *,
    store: ReconcileStore,
    stackone: _LmsLister,
    queue: SyncQueue | None,
    retry: ReadRetry | None = None,
    progress: Progress | None = None,
) -> LmsReport:
    """Check one account; ``queue=None`` is a dry run (reports, reopens nothing). Never raises for StackOne.

    ``retry``: how a page of the LMS's lists is asked again (:func:`listing_retry`; by default
    ``reconcile``'s default settings).

    ``progress(label, rows read, None)`` is called after each page of the LMS's lists (the progress bar).
    The syncs it queues are background work (:mod:`lmsbridge.lanes`), as are its reads (through the
    reconcile sub-budget): both wait behind live ones. What lmsbridge holds on the account is kept
    compact (:class:`~lmsbridge.reconcile.lms_index.AccountIndex`, about 100 bytes a record) and
    the LMS's lists are read through, never kept.
    """
    report = LmsReport(account)
    started = time.monotonic()
    try:
        index = AccountIndex(await store.directory(account))
        await store.each_sync_row(
            account,
            lambda rid, email, ref, a, c, w: index.hold(rid, email, ref, assignment=a, completion=c, written=w),
        )
        report.unknown_people = index.unknown_people
        first = await store.first_written_at(account)
        since = first - MARGIN if first is not None else None
        retry = retry or listing_retry(ReconcileSettings())
        listed = [
            await _listing(stackone, account, kind, since, index, retry, progress)
            for kind in ("assignments", "completions")
        ]
        report.lms_assignments, report.lms_completions = listed
        report.unreadable_rows = sum(index.unreadable.values())
        report.unverified = index.unverified()
        report.written_checked = index.written - report.not_checked
        now = time.time()
        for lost in index.missing():
            report.drift[LMS_ASSIGNMENT_MISSING] += int(lost.assignment)
            report.drift[LMS_COMPLETION_MISSING] += int(lost.completion)
            if queue is None:
                continue
            if await store.reopen(
                lost.record_id, account, assignment=lost.assignment, completion=lost.completion, now=now
            ):
                report.reopened += 1
                with lane(background=True):
                    await queue.queue_sync(
                        lost.record_id, account, correlation_id=f"reconcile-lms-{account}", received_at=now
                    )
                report.queued += 1
        unknown = await _still_unknown(store, account, index.unknown_writes)
        report.drift[LMS_UNKNOWN_WRITE] = len(unknown)
        report.unknown_writes = [
            {"kind": kind, "user_id": uid, "learning_object": ref} for kind, uid, ref in unknown[:SAMPLE]
        ]
        report.finished = True
    except (LmsbridgeError, InfrastructureFault) as exc:
        report.error = str(exc)
    report.duration = time.monotonic() - started
    return report


async def _still_unknown(
    store: ReconcileStore, account: str, unknown: list[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Those of ``unknown`` (kind, user id, learning object) lmsbridge still has no record of: the
    live workers go on writing while the LMS is listed (minutes, for a large account), and a record
    stored after the index was read is no stranger's write."""
    if not unknown:
        return unknown
    email_of = {uid: email for email, uid in (await store.directory(account)).items()}
    held = await store.held_pairs(account, [(email_of[uid], ref) for _, uid, ref in unknown if uid in email_of])
    return [(kind, uid, ref) for kind, uid, ref in unknown if (email_of.get(uid), ref) not in held]


def listing_retry(settings: ReconcileSettings) -> ReadRetry:
    """A page of the LMS's lists tried ``max_attempts`` times, ``backoff_seconds`` doubling, at most
    ``max_wait_seconds`` between tries (a 429's wait is the rate limiter's)."""
    return ReadRetry(settings.max_attempts, settings.backoff_seconds, settings.max_wait_seconds)


def lms_budget(settings: Settings, parent: Budget) -> SubBudget:
    """Reconciliation's share (``reconcile.budget_share``) of the key's budget ``parent``, shared with the workers."""
    return SubBudget(parent, settings.reconcile.budget_share)


async def lms_command(settings: Settings, *, account: str | None, dry_run: bool, as_json: bool) -> int:
    """``reconcile --lms [--account ID]``: 0 when every account was checked, 1 otherwise, 2 for bad settings."""
    accounts = settings.accounts()
    if account is not None:
        if account not in accounts:
            print(f"lmsbridge: config: --account: {account} is not an account of any source", file=sys.stderr)
            return 2
        accounts = [account]
    if not accounts or not settings.stackone.api_key.get_secret_value():
        print("lmsbridge: config: stackone.api_key: required to read the LMS", file=sys.stderr)
        return 2
    engine = create_engine(settings.database_url.get_secret_value())
    store = ReconcileStore(engine)
    shared = open_shared_budget(settings, engine, role="reconcile-lms")
    broker: Broker | None = None
    reports: list[LmsReport] = []
    calls = 0

    def count(operation: str, status: int, seconds: float) -> None:
        nonlocal calls
        calls += 1

    try:
        await require_current_schema(engine)
        if not dry_run:
            broker = Broker.configured(settings, name="lmsbridge-reconcile-lms", accounts=accounts)
            try:
                await broker.start(wait=15.0)
            except BrokerUnavailable as exc:
                print(f"lmsbridge: reconcile: {exc}", file=sys.stderr)
                return 1
        async with aiohttp.ClientSession() as session:
            client = StackOneClient(
                session,
                settings.stackone,
                user_agent=USER_AGENT,
                limiter=lms_budget(settings, shared.limiter),
                on_response=count,
            )
            with progress_bar(not as_json) as bar:
                for name in accounts:
                    before = calls
                    queue = BrokerSyncQueue(broker) if broker is not None else None
                    report = await lms_pass(
                        name,
                        store=store,
                        stackone=client,
                        queue=queue,
                        retry=listing_retry(settings.reconcile),
                        progress=bar,
                    )
                    report.stackone_calls = calls - before
                    await record(store, report, dry_run=dry_run, metrics=None)
                    reports.append(report)
    finally:
        if broker is not None:
            await broker.close()
        await shared.close()
        await store.close()
        await engine.dispose()
    show(reports, as_json=as_json, dry_run=dry_run)
    return 0 if all(r.finished for r in reports) else 1


def pass_name(account: str) -> str:
    """The name an account's LMS pass is kept under (beside the sources' names)."""
    return f"lms:{account}"


async def record(store: ReconcileStore, report: LmsReport, *, dry_run: bool, metrics: Metrics | None) -> None:
    """Log the pass, count it, and (unless dry) keep its figures for ``status`` under :func:`pass_name`."""
    source = pass_name(report.account)
    outcome = "finished" if report.finished else "stopped"
    (log.info if report.finished else log.warning)(
        "reconcile.lms_pass",
        account=report.account,
        outcome=outcome,
        checked=report.written_checked,
        not_checked=report.not_checked,
        unknown_people=report.unknown_people,
        reopened=report.reopened,
        unreadable_rows=report.unreadable_rows,
        unverified=report.unverified,
        stackone_calls=report.stackone_calls,
        duration=round(report.duration, 3),
        error=report.error,
        **{f"drift_{k}": v for k, v in report.drift.items()},
    )
    if metrics is not None:
        metrics.reconcile_runs.labels(source=source, outcome=outcome).inc()
        for kind, n in report.drift.items():
            if n:
                metrics.reconcile_drift.labels(source=source, kind=kind).inc(n)
        metrics.reconcile_calls.labels(source=source).set(report.stackone_calls)
        if report.finished:
            metrics.reconcile_last_success.labels(source=source).set(time.time())
    if dry_run:
        return
    findings = report.as_dict()
    with contextlib.suppress(InfrastructureFault):  # printed and logged anyway
        await store.record_pass(
            source,
            started_at=time.time() - report.duration,
            duration=report.duration,
            outcome=outcome,
            findings=findings,
            error=report.error,
        )


def show(reports: list[LmsReport], *, as_json: bool, dry_run: bool) -> None:
    """The LMS pass's summary: a table, or JSON."""
    if as_json:
        print_json(
            {
                "finished": all(r.finished for r in reports),
                "dry_run": dry_run,
                "accounts": {r.account: r.as_dict() for r in reports},
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="LMS reconciliation" + (" (dry run: nothing reopened)" if dry_run else ""))
    columns = ("account", "written checked", "not checked", "assignments missing", "completions missing", "reopened")
    for column in columns:
        table.add_column(column, justify="left" if column == "account" else "right")
    for column in ("unknown writes", "StackOne calls", "time", "result"):
        table.add_column(column, justify="right")
    for r in reports:
        table.add_row(
            r.account,
            str(r.written_checked),
            str(r.not_checked),
            str(r.drift[LMS_ASSIGNMENT_MISSING]),
            str(r.drift[LMS_COMPLETION_MISSING]),
            str(r.reopened),
            str(r.drift[LMS_UNKNOWN_WRITE]),
            str(r.stackone_calls),
            f"{r.duration:.1f} s",
            _result(r),
        )
    Console(markup=False).print(table)  # errors are printed as they are, never as markup
    for r in reports:
        if not r.finished:  # the table's cell is too narrow for the reason: in full, as the platform pass does
            Console(stderr=True).print(f"{r.account}: stopped: {r.error}", markup=False)
        if r.unknown_people:
            Console().print(
                f"{r.account}: {r.unknown_people} written records not checked: their people are not in the"
                " directory (no LMS user id to look them up by)",
                markup=False,
            )
        if r.unreadable_rows:
            Console().print(
                f"{r.account}: {r.unreadable_rows} LMS rows without a user id or learning object reference,"
                f" skipped; {r.unverified} written records they may be were not checked (not reopened)",
                markup=False,
            )
        for w in r.unknown_writes:
            Console().print(
                f"{r.account}: {w['kind']} of {w['learning_object']} for user {w['user_id']}: not lmsbridge's record",
                markup=False,
            )


def _result(report: LmsReport) -> str:
    """The table's last cell: finished (and whether all was checked), or why it stopped."""
    if not report.finished:
        return f"stopped: {report.error}"
    return f"finished, {report.not_checked} not checked" if report.not_checked else "finished"
