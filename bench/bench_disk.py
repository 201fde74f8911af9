"""The database's size on disk: what a new record costs, and what an event that updates one costs.

An operator sizing the database needs two figures: each (person, learning object, account) is a
record and a sync row, kept for good (they are what keeps duplicates and late events from
regressing the LMS); each event is also an inbox row, kept ``inbox_retention_days`` (14 by default)
and then pruned. Phase 1 stores ``--records`` new records as the worker does (stored with the sync
row leased, the intent, the create recorded, the person's StackOne id in the directory); phase 2
sends each record one completion event (updated in place, one more inbox row). Both on a SQLite
file (file and write-ahead log, after a checkpoint) and on a fresh PostgreSQL database (every
table with its indexes and TOAST, after ``VACUUM``; ``--pg-admin-url``).

    .venv/bin/python bench/bench_disk.py [--records 10000] [--pg-admin-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from bench_storage import ACCOUNT, event, one
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from lmsbridge.domain import PersonProgress
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import metadata

IN_FLIGHT = 64
Size = Callable[[Repository], Coroutine[Any, Any, int]]


async def sqlite_size(repo: Repository) -> int:
    """Bytes of the SQLite file and its write-ahead log, once the log is checkpointed into the file."""
    path = Path(str(repo.engine.url.database))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


async def postgres_size(repo: Repository) -> int:
    """Bytes of lmsbridge's tables with their indexes and TOAST, after a VACUUM."""
    names = [t.name for t in metadata.sorted_tables]
    query = text("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname = ANY(:names)")
    async with repo.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM"))
        return int((await conn.execute(query, {"names": names})).scalar() or 0)


@asynccontextmanager
async def migrated(url: str) -> AsyncIterator[Repository]:
    """The repository on the database at ``url``, migrated to the current schema; closed after."""
    engine = create_engine(url)
    await upgrade(engine)
    repo = Repository(engine)
    try:
        yield repo
    finally:
        await repo.close()
        await engine.dispose()


@asynccontextmanager
async def sqlite_repo() -> AsyncIterator[Repository]:
    with tempfile.TemporaryDirectory() as folder:
        async with migrated(f"sqlite+aiosqlite:///{Path(folder) / 'disk.db'}") as repo:
            yield repo


@asynccontextmanager
async def postgres_repo(admin_url: str) -> AsyncIterator[Repository]:
    name = f"lmsbridge_disk_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        async with migrated(f"postgresql+asyncpg://{urlsplit(admin_url).netloc}/{name}") as repo:
            yield repo
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def in_lanes(count: int, work: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    numbers = iter(range(count))

    async def lane() -> None:
        for n in numbers:
            await work(n)

    await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))


async def measure(repo: Repository, size: Size, records: int) -> dict[str, float]:
    """Bytes a new record and bytes an updating event, on ``repo``."""
    now = datetime.now(UTC)
    empty = await size(repo)

    async def new(n: int) -> None:
        await one(repo, n, now)
        await repo.directory.save_users(ACCOUNT, [(f"p{n}@x.example", f"usr_{n:012d}")])

    async def completed(n: int) -> None:
        person = PersonProgress(email=f"p{n}@x.example", progress=100, completed_at=now, passed=True, score=91.0)
        done = event(n, now).model_copy(
            update={
                "message_id": f"done-{n}",
                "type": "assignment.completed",
                "occurred_at": now + timedelta(hours=1),
                "people": (person,),
            }
        )
        await repo.intake.ingest([(done, done.people)], {"exec": [ACCOUNT]})

    await in_lanes(records, new)
    after_new = await size(repo)
    await in_lanes(records, completed)
    after_updates = await size(repo)
    return {
        "record": (after_new - empty) / records,
        "update": (after_updates - after_new) / records,
        "total_mib": (after_updates - empty) / 2**20,
    }


async def main_async(args: argparse.Namespace) -> int:
    rows: list[tuple[str, dict[str, float], float]] = []
    started = time.perf_counter()
    async with sqlite_repo() as repo:
        rows.append(("SQLite", await measure(repo, sqlite_size, args.records), time.perf_counter() - started))
    started = time.perf_counter()
    async with postgres_repo(args.pg_admin_url) as repo:
        rows.append(("PostgreSQL", await measure(repo, postgres_size, args.records), time.perf_counter() - started))
    table = Table(title=f"Database size: {args.records:,} new records, then one completion event each")
    for column in ("database", "bytes a new record", "bytes an updating event", "total MiB", "seconds"):
        table.add_column(column, justify="right")
    for name, figures, seconds in rows:
        record, update, total = figures["record"], figures["update"], figures["total_mib"]
        table.add_row(name, f"{record:,.0f}", f"{update:,.0f}", f"{total:.1f}", f"{seconds:.0f}")
    Console(width=120).print(table)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
