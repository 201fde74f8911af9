"""A migration that cannot run says why: faults waiting can mend are retried within the caller's
wait, every other one fails at once naming its kind (never the URL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from lmsbridge.errors import InfrastructureFault
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import LOCK_WAIT, _unreachable, head, upgrade, upgrade_when_reachable


async def _version(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()


async def test_a_migration_sqlite_refuses_fails_at_once_naming_its_kind(sqlite_url: str) -> None:
    """A table a migration creates already there (left by hand): the migration fails at once with
    the fault's kind, neither retried for the whole wait nor reported as "unreachable", and the
    schema stays at the revision it was (before: `database.unreachable` every few seconds for the
    wait, then "database: unreachable (... SQLITE_ERROR)")."""
    engine = create_engine(sqlite_url, bounded=False)
    try:
        await upgrade(engine, "0002")
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE reconcile_runs (x integer)"))  # 0003 creates it
        started = time.monotonic()
        with capture_logs() as logs, pytest.raises(InfrastructureFault) as failed:
            await upgrade_when_reachable(engine, wait=20)
        assert time.monotonic() - started < 5
        assert str(failed.value) == "database: OperationalError (OperationalError, SQLITE_ERROR)"
        assert [entry for entry in logs if entry["event"] == "database.unreachable"] == []
        assert await _version(engine) == "0002"
    finally:
        await engine.dispose()


async def test_a_read_only_sqlite_file_fails_at_once_as_read_only(tmp_path: Path) -> None:
    """A SQLite file the process may only read, at a revision behind: the migration fails at once
    naming SQLITE_READONLY (before: retried for the whole wait and reported as unreachable)."""
    path = tmp_path / "lmsbridge.db"
    writable = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(writable, "0003")
    await writable.dispose()
    engine = create_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", bounded=False)
    try:
        started = time.monotonic()
        with capture_logs() as logs, pytest.raises(InfrastructureFault) as failed:
            await upgrade_when_reachable(engine, wait=20)
        assert time.monotonic() - started < 5
        assert str(failed.value) == "database: OperationalError (OperationalError, SQLITE_READONLY)"
        assert [entry for entry in logs if entry["event"] == "database.unreachable"] == []
    finally:
        await engine.dispose()


async def test_a_sqlite_file_that_cannot_be_opened_yet_is_waited_for(tmp_path: Path) -> None:
    """A SQLite file whose directory is not there (a volume not mounted yet) is retried for the
    wait, each try logged as `database.unreachable`, and then reported as unreachable."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-yet' / 'lmsbridge.db'}", bounded=False)
    try:
        with capture_logs() as logs, pytest.raises(InfrastructureFault) as failed:
            await upgrade_when_reachable(engine, wait=2)
        assert str(failed.value) == "database: unreachable (OperationalError (OperationalError, SQLITE_CANTOPEN))"
        assert [entry["event"] for entry in logs].count("database.unreachable") >= 2
    finally:
        await engine.dispose()


def _sqlite_fault(path: Path, *statements: str, uri: bool = False) -> OperationalError:
    """The error SQLAlchemy raises for the last of ``statements`` on the real SQLite file ``path``."""
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if uri else f"sqlite:///{path}"
    engine = sa.create_engine(url, connect_args={"timeout": 0, "isolation_level": None})
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError(f"{statements} did not fail")


def test_only_faults_waiting_can_mend_count_as_unreachable(tmp_path: Path) -> None:
    """From SQLite's real errors: another process holding the lock (SQLITE_BUSY) and a file that
    cannot be opened yet are worth waiting for; a table already there, a read-only file and a
    statement SQLite refuses are not; a refused connection is."""
    path = tmp_path / "lmsbridge.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (n int)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    try:
        busy = _sqlite_fault(path, "BEGIN IMMEDIATE")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert getattr(busy.orig, "sqlite_errorname", None) == "SQLITE_BUSY"
    assert _unreachable(busy)
    assert _unreachable(_sqlite_fault(tmp_path / "missing" / "lmsbridge.db", "SELECT 1"))
    assert _unreachable(ConnectionRefusedError())
    assert not _unreachable(_sqlite_fault(path, "CREATE TABLE t (n int)"))
    assert not _unreachable(_sqlite_fault(path, "INSERT INTO t VALUES (1)", uri=True))
    assert not _unreachable(_sqlite_fault(path, "SELECT nothing FROM t"))


@pytest.fixture
async def inbox_held(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A PostgreSQL database at revision 0001 and another session's open transaction that read
    ``inbox`` (an ACCESS SHARE lock, held until it ends), which migration 0002 alters."""
    engine = create_engine(pg_url, bounded=False)
    await upgrade(engine, "0001")
    await engine.dispose()
    holder = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    await holder.execute("BEGIN")
    await holder.fetchval("SELECT count(*) FROM inbox")
    yield holder
    await holder.close()


@pytest.mark.postgres
async def test_a_postgresql_migration_waiting_for_a_lock_lets_readers_by_and_goes_on_once_it_is_free(
    pg_url: str, inbox_held: asyncpg.Connection
) -> None:
    """While another session holds a lock on a table a migration alters, the migration waits at
    most LOCK_WAIT seconds a try, logs `migrate.lock_wait` naming the table and tries again, so
    the table's readers, queued behind its lock request, get through within one such wait (before,
    they and the migration waited for as long as the session lived, without a line in the log);
    once the session ends, the migration completes within the caller's wait."""
    engine = create_engine(pg_url, bounded=False)
    reader = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    migrating: asyncio.Task[None] | None = None
    try:
        with capture_logs() as logs:
            migrating = asyncio.create_task(upgrade_when_reachable(engine, wait=60))
            await asyncio.sleep(1)  # its ALTER TABLE inbox is waiting for the lock
            started = time.monotonic()
            await reader.fetchval("SELECT count(*) FROM inbox", timeout=LOCK_WAIT + 5)
            assert time.monotonic() - started < LOCK_WAIT + 2
            for _ in range(100):
                if any(entry["event"] == "migrate.lock_wait" for entry in logs):
                    break
                await asyncio.sleep(0.1)
            assert not migrating.done()
            await inbox_held.execute("ROLLBACK")
            await asyncio.wait_for(migrating, 30)
        waits = [entry for entry in logs if entry["event"] == "migrate.lock_wait"]
        assert waits
        assert all(entry["table"] == "inbox" and entry["log_level"] == "warning" for entry in waits)
        assert await _version(engine) == head()
    finally:
        await inbox_held.close()  # lets a migration still waiting (without the bound) finish
        if migrating is not None:
            await asyncio.wait({migrating}, timeout=30)
        await reader.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgresql_migration_gives_up_on_a_lock_held_past_the_wait_naming_it(
    pg_url: str, inbox_held: asyncpg.Connection
) -> None:
    """A lock held for longer than the caller's wait: the migration gives up within about one lock
    wait of the end of it, with one line naming the table, the SQLSTATE and what to do, and the
    schema stays at its revision (before: it waited, silently, for as long as the lock was held)."""
    engine = create_engine(pg_url, bounded=False)
    try:
        migrating = asyncio.create_task(upgrade_when_reachable(engine, wait=1))
        await asyncio.wait({migrating}, timeout=LOCK_WAIT + 5)
        gave_up = migrating.done()
        await inbox_held.execute("ROLLBACK")  # an unbounded migration would now go on and succeed
        with pytest.raises(InfrastructureFault) as failed:
            await migrating
        assert gave_up
        assert str(failed.value) == (
            "database: the migration needs a lock on table inbox that another session holds "
            "(DBAPIError (LockNotAvailableError, SQLSTATE 55P03)): end that session's transaction, then migrate again"
        )
        assert await _version(engine) == "0001"
    finally:
        await inbox_held.close()
        await engine.dispose()
