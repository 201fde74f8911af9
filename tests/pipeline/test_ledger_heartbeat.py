"""A process that runs but cannot write its counters: ``status`` does not call it stopped, and the
process's own metrics and log say its writes fail.

Each process writes its event counters (``ledger_counts``) every 2 s: the rows' age is all
``status`` has to go on, so a row gone quiet may be a process killed or one whose writes the
database refuses. The refusal here is real: a trigger on the SQLite file fails every write of
the table, as a full disk or a read-only file would, while reads go on.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lmsbridge.ops import gather_status, status
from lmsbridge.runtime import Runtime
from tests.pipeline.conftest import SettingsFactory

Start = Callable[..., Awaitable[Runtime]]
LAST_WRITE = "lmsbridge_ledger_last_success_timestamp_seconds"


def _refuse_counter_writes(database: Path, *, aged: float) -> None:
    """Age every counter row by ``aged`` seconds and make the database refuse any write of them
    from then on (one transaction: no write of the process lands in between)."""
    with sqlite3.connect(database, timeout=30) as db:
        db.execute("UPDATE ledger_counts SET updated_at = updated_at - ?", (aged,))
        for when in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER refuse_{when.lower()} BEFORE {when} ON ledger_counts "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )


async def test_a_running_process_that_cannot_write_its_counts_is_not_reported_stopped(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker and receiver in one process run on while the database refuses its counter writes
    for a minute: ``status`` says the process has not been heard from for about a minute and that
    it may be running and unable to write them, not that it stopped; the process counts the
    failure (``ledger.write_failed``, ``lmsbridge_ledger_last_success_timestamp_seconds`` no
    longer advancing). Before: status printed "stopped without their last counts" for a process
    that was running, and nothing on its /metrics said its writes failed."""
    settings = make_settings()
    runtime = await start_runtime(settings)

    def last_write() -> float:
        return runtime.metrics.registry.get_sample_value(LAST_WRITE) or 0.0

    for _ in range(100):
        if last_write():
            break
        await asyncio.sleep(0.1)
    assert last_write() > 0
    with capture_logs() as logs:
        _refuse_counter_writes(Path(sqlite_url.removeprefix("sqlite+aiosqlite:///")), aged=60.0)
        await asyncio.sleep(0.5)  # a write that landed just before is counted by now
        written = last_write()
        await asyncio.sleep(5.0)  # two of the process's writes were refused
    assert last_write() == written
    assert [e["event"] for e in logs].count("ledger.write_failed") == 1  # once per failing streak

    ledger = (await gather_status(settings))["system_ledger"]
    [silent] = ledger["processes_lost"]
    assert 60 <= ledger["processes_silent_seconds"][silent] < 75
    assert ledger["identity"].startswith("unchecked")
    assert "it runs and cannot write them" in ledger["identity"]
    assert await status(settings, as_json=False) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "not heard from for 6" in printed
    assert "unable to write" in printed
    assert silent in printed
    assert "stopped without their last counts" not in printed
