"""Migrations cannot race: workers starting together on a fresh database migrate it once, none fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

PROCESSES = 8

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    from lmsbridge.storage import create_engine
    from lmsbridge.storage.migrate import upgrade

    async def main(url: str, at: float) -> None:
        engine = create_engine(url)
        async with engine.connect():
            pass  # connected before the start line, so the processes really start together
        await asyncio.sleep(max(0.0, at - time.time()))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    """
)


def migrate_together(url: str) -> list[subprocess.CompletedProcess[str]]:
    """Start PROCESSES interpreters that each run the migrations at the same instant."""
    at = time.time() + 4.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, url, str(at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


async def versions(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return [row[0] for row in await conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_workers_starting_together_on_postgresql_migrate_once(pg_url: str) -> None:
    """Eight processes migrating one fresh PostgreSQL database at the same instant all succeed
    (without the advisory lock most fail on a duplicate `alembic_version` type) and leave one version row."""
    results = migrate_together(pg_url)
    assert [r.returncode for r in results] == [0] * PROCESSES, [r.stderr[-500:] for r in results if r.returncode]
    assert len(await versions(pg_url)) == 1


async def test_workers_starting_together_on_sqlite_migrate_once(sqlite_url: str) -> None:
    """The same on a fresh SQLite file (BEGIN IMMEDIATE serialises them)."""
    results = migrate_together(sqlite_url)
    assert [r.returncode for r in results] == [0] * PROCESSES, [r.stderr[-500:] for r in results if r.returncode]
    assert len(await versions(sqlite_url)) == 1
