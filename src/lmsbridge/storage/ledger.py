"""The delivery ledger across processes: each process's event counters, kept in the database.

Receivers count what they accepted, workers what they upserted, found duplicate and
dead-lettered; each process alone sees only its part of the identity
``accepted = upserted + duplicate + dead_lettered + in flight``. Every process writes its
counters here (absolute values under its own name, so a write repeated is harmless) every few
seconds and once more at a clean stop (``final``); ``lmsbridge status`` adds them up and compares
the remainder with what the broker still holds.

A process killed without a clean stop leaves its last write behind: at most one interval of
its counts is missing, and ``status`` says so (a row neither final nor recent). So does a process
that runs on while the database refuses its writes (a full disk, a lock held): its rows' age is
all this table tells, so ``status`` names such a process *silent* for so long, not stopped (the
process itself logs ``ledger.write_failed``). Rows of processes
that stopped are folded into one ``(retired)`` row (a killed one's after ten minutes, counted in
its ``processes_killed`` stage), so the table stays as small as the number of running processes.

Receivers are not the only inputs: a reconcile pass and a dead-letter replay put events in the
intake queues too (``requeued``), and the workers settle them like any other. A one-shot command
(``reconcile``, ``dlq replay``) writes its counts once, as a final row (:func:`record_once`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.errors import InfrastructureFault
from lmsbridge.storage.database import open_database
from lmsbridge.storage.engine import create_engine, missing_sqlite_file
from lmsbridge.storage.shared import dialect_insert, fault_name
from lmsbridge.storage.tables import ledger_counts

__all__ = ["RETIRED", "LedgerStore", "SystemLedger", "record_once"]

RETIRED = "(retired)"
KILLED = "processes_killed"
_FOLD_LOST_AFTER = 600.0


@dataclass(frozen=True, slots=True)
class SystemLedger:
    """The counters of every process that wrote any, added up by stage."""

    totals: dict[str, int] = field(default_factory=dict)
    processes: int = 0
    running: int = 0  # wrote within ``stale_after`` and not final
    lost: list[str] = field(default_factory=list)  # neither final nor recent: killed, or its writes fail
    killed: int = 0  # processes folded away without their last counts (their last interval is missing)
    silent: dict[str, float] = field(default_factory=dict)  # each lost process: seconds since its last write


class LedgerStore:
    """Writes this process's counters; reads everyone's."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = open_database(engine, durable=False)  # counters: the next write repeats them anyway
        self._insert = dialect_insert(engine.dialect.name)

    async def save(self, process: str, counts: Mapping[str, int], *, final: bool = False) -> None:
        """Replace ``process``'s counters with ``counts``."""
        if not counts:
            return
        now = time.time()
        rows = [
            {"process": process, "stage": s, "n": int(n), "updated_at": now, "final": final} for s, n in counts.items()
        ]
        stmt = self._insert(ledger_counts)
        upsert = stmt.on_conflict_do_update(
            index_elements=["process", "stage"],
            set_={"n": stmt.excluded.n, "updated_at": stmt.excluded.updated_at, "final": stmt.excluded.final},
        )

        def work(conn: Connection) -> None:
            conn.execute(upsert, rows)
            if final:
                _fold(conn, self._insert, now)

        await self._db.write([work])

    async def system(self, *, stale_after: float = 30.0) -> SystemLedger:
        """Every process's counters added up; which processes stopped without writing their last ones."""

        def work(conn: Connection) -> SystemLedger:
            totals: dict[str, int] = {}
            seen: dict[str, tuple[float, bool]] = {}
            killed = 0
            for row in conn.execute(select(ledger_counts)):
                if row.stage == KILLED:
                    killed += int(row.n)
                    continue
                totals[row.stage] = totals.get(row.stage, 0) + int(row.n)
                if row.process == RETIRED:
                    continue
                latest, final = seen.get(row.process, (0.0, True))
                seen[row.process] = (max(latest, float(row.updated_at)), final and bool(row.final))
            now = time.time()
            running = sum(1 for at, final in seen.values() if not final and at >= now - stale_after)
            lost = sorted(p for p, (at, final) in seen.items() if not final and at < now - stale_after)
            silent = {p: now - seen[p][0] for p in lost}
            return SystemLedger(totals, len(seen), running, lost, killed, silent)

        return await self._db.read(work)

    async def close(self) -> None:
        """Release the store's connection (and, on SQLite, its thread)."""
        await self._db.close()


async def record_once(url: str, process: str, counts: Mapping[str, int], *, timeout: float = 10.0) -> str | None:
    """Write a one-shot process's counters as its final row; None once written (or with nothing to
    write), else why they were not (the fault's kind, never the URL or the driver's text). Never raises
    for the database: a command that did its job does not fail for its counts."""
    if not any(counts.values()):
        return None
    if missing_sqlite_file(url) is not None:  # connecting would create it, empty
        return "the SQLite file does not exist"
    engine = create_engine(url)
    store = LedgerStore(engine)
    try:
        await asyncio.wait_for(store.save(process, counts, final=True), timeout)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except Exception as exc:
        return fault_name(exc.__cause__ or exc) if isinstance(exc, InfrastructureFault) else fault_name(exc)
    finally:
        await store.close()
        await engine.dispose()
    return None


def _fold(conn: Connection, insert: Any, now: float) -> None:
    """Add the rows of stopped processes (and of killed ones, after ten minutes) to ``(retired)``."""
    rows = conn.execute(select(ledger_counts).where(ledger_counts.c.process != RETIRED)).all()
    latest: dict[str, tuple[float, bool]] = {}
    for row in rows:
        at, final = latest.get(row.process, (0.0, True))
        latest[row.process] = (max(at, float(row.updated_at)), final and bool(row.final))
    gone = {p for p, (at, final) in latest.items() if final or at < now - _FOLD_LOST_AFTER}
    if not gone:
        return
    sums: dict[str, int] = {}
    for row in rows:
        if row.process in gone:
            sums[row.stage] = sums.get(row.stage, 0) + int(row.n)
    killed = sum(1 for p in gone if not latest[p][1])
    if killed:
        sums[KILLED] = sums.get(KILLED, 0) + killed
    stmt = insert(ledger_counts)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["process", "stage"],
            set_={"n": ledger_counts.c.n + stmt.excluded.n, "updated_at": stmt.excluded.updated_at},
        ),
        [{"process": RETIRED, "stage": stage, "n": n, "updated_at": now, "final": True} for stage, n in sums.items()],
    )
    conn.execute(delete(ledger_counts).where(ledger_counts.c.process.in_(sorted(gone))))
