"""How a pass is shown: a progress bar on a terminal, a summary table, JSON, a log line, metrics."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.reconcile.findings import SourceReport

log = get_logger(__name__)


class Bar:
    """A rich progress bar per source, shown only on a terminal (a no-op otherwise)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, source: str, done: int, total: int | None) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(source)
        if task is None:
            task = self._tasks[source] = self._progress.add_task(source, total=total)
        self._progress.update(task, completed=done, total=total)


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Bar]:
    """A :class:`Bar` drawing on stderr while the block runs, when ``enabled`` and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield Bar(None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        yield Bar(progress)


def summary(reports: Sequence[SourceReport]) -> dict[str, Any]:
    """The figures of a run, as plain data (``--json``)."""
    return {
        "finished": all(r.finished for r in reports),
        "sources": {r.source: r.as_dict() for r in reports},
    }


def print_json(data: dict[str, Any]) -> None:
    """``data`` as indented JSON on stdout."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(reports: Sequence[SourceReport], *, dry_run: bool) -> None:
    """The summary table, then where each stopped source stopped."""
    console = Console(markup=False)
    title = "Reconciliation (dry run: nothing queued)" if dry_run else "Reconciliation"
    table = Table(title=title)
    columns = (
        *("source", "assignments read", "records read", "new records", "new completions", "updated"),
        *("in step", "queued", "platform calls", "time", "result"),
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("source", "result") else "right")
    for r in reports:
        table.add_row(
            r.source,
            str(r.assignments_read),
            str(r.records_read),
            str(r.drift["record_missing"]),
            str(r.drift["completion_missing"]),
            str(r.drift["updated"]),
            str(r.in_step),
            str(r.events_queued),
            str(r.platform_calls),
            f"{r.duration:.1f} s",
            "finished" if r.finished else "stopped",
        )
    console.print(table)
    for r in reports:
        if not r.finished:
            Console(stderr=True).print(f"{r.source}: stopped at {r.stopped_at}: {r.error}", markup=False)


def observe(metrics: Metrics | None, report: SourceReport, *, finished_at: float) -> None:
    """One log event per pass with its figures, and the reconcile metrics."""
    outcome = "finished" if report.finished else "stopped"
    (log.info if report.finished else log.warning)(
        "reconcile.pass",
        source=report.source,
        outcome=outcome,
        assignments=report.assignments_read,
        records=report.records_read,
        in_step=report.in_step,
        queued=report.events_queued,
        platform_calls=report.platform_calls,
        detail_calls=report.detail_calls,
        duration=round(report.duration, 3),
        stopped_at=report.stopped_at,
        error=report.error,
        **{f"drift_{k}": v for k, v in report.drift.items()},
    )
    if metrics is None:
        return
    metrics.reconcile_runs.labels(source=report.source, outcome=outcome).inc()
    for kind, n in report.drift.items():
        if n:
            metrics.reconcile_drift.labels(source=report.source, kind=kind).inc(n)
    metrics.reconcile_calls.labels(source=report.source).set(report.platform_calls)
    if report.finished:
        metrics.reconcile_last_success.labels(source=report.source).set(finished_at)
