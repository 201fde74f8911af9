"""Where the repository's SQL runs: a thread of its own for SQLite, the event loop for PostgreSQL.

The repository writes its statements as plain functions of a synchronous SQLAlchemy
:class:`~sqlalchemy.Connection`, and hands them here:

* **SQLite**: one dedicated thread with one ``pysqlite`` connection runs a whole batch of
  them per hop. Through aiosqlite every DBAPI call (cursor, execute, fetch, close) is a hop
  between threads, which costs ten times the statement itself; here a batch costs one.
* **PostgreSQL**: the async engine (asyncpg) runs the same functions with ``run_sync``.

Both run a batch in one transaction and return its results in order, or raise.
:func:`is_data_error` tells a statement refused for the data it carries (too long, a NUL on
PostgreSQL, a date out of range, a constraint) from a database that failed (connection lost,
locked, shutting down): the first fails again however often it is retried, the second heals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.storage.engine import READ_ONLY, configure_sqlite, is_sqlite

T = TypeVar("T")
SyncWork = Callable[[Connection], Any]

__all__ = ["Database", "SyncWork", "is_conflict", "is_data_error", "open_database"]

# SQLSTATE classes of a statement refused for its values: 22 data exception (value too long,
# NUL in text, date out of range), 23 integrity constraint violation.
_DATA_SQLSTATE_CLASSES = ("22", "23")
# Raised by the driver or a bind processor while turning one value into SQL (a date past year
# 9999 once moved to UTC, an int past 64 bits, an unencodable string): the value's fault.
_VALUE_FAULTS = (ValueError, OverflowError, TypeError, UnicodeError)


# SQLSTATEs of a transaction PostgreSQL rolled back to break a tie with another (a deadlock between
# two workers' batches, a serialization failure): run again, it succeeds.
_CONFLICT_SQLSTATES = ("40P01", "40001")


def is_conflict(exc: BaseException) -> bool:
    """True when the database rolled the transaction back because of another one (deadlock, serialization)."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    cause = getattr(orig, "__cause__", None)
    for candidate in (orig, cause):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if state in _CONFLICT_SQLSTATES:
            return True
    return False


def is_data_error(exc: BaseException) -> bool:
    """True when the database refused a statement for the data it carries, not for its own state.

    Retrying such a statement can never succeed; a lost connection, a locked file, a
    serialization failure or a server shutting down (``OperationalError`` and friends) can.
    """
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in _DATA_SQLSTATE_CLASSES
    if isinstance(exc, sa_exc.StatementError):  # failed while binding a value, before the database saw it
        return isinstance(exc.orig, _VALUE_FAULTS)
    return False


class Database(Protocol):
    """Runs synchronous SQLAlchemy functions for async callers."""

    async def write(self, batch: Sequence[SyncWork]) -> list[Any]:
        """Run ``batch`` in one transaction; results in order, or raise (nothing kept)."""
        ...

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run one read outside any write transaction."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


def _run_all(conn: Connection, batch: Sequence[SyncWork]) -> list[Any]:
    return [work(conn) for work in batch]


class ThreadedSqlite:
    """SQLite through ``pysqlite`` on one thread: one hop per batch, not per call."""

    def __init__(self, url: str, *, durable: bool = True) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        self.engine: Engine = create_sync_engine(sync_url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
        configure_sqlite(self.engine, durable=durable, poll_lock=True)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmsbridge-sqlite")

    def _write(self, batch: Sequence[SyncWork]) -> list[Any]:
        with self.engine.begin() as conn:
            return _run_all(conn, batch)

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            return work(conn)

    async def write(self, batch: Sequence[SyncWork]) -> list[Any]:
        """Run ``batch`` in one ``BEGIN IMMEDIATE`` transaction on the SQLite thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, batch)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on the SQLite thread (WAL: it never waits for a writer in another process)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, work)

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.dispose)
        self._thread.shutdown(wait=True)


class AsyncPostgres:
    """PostgreSQL through the async engine: the same functions, run with ``run_sync``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def write(self, batch: Sequence[SyncWork]) -> list[Any]:
        """Run ``batch`` in one transaction."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(_run_all, batch)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a pooled connection."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        """Nothing of its own: the engine is disposed by its owner."""


def open_database(engine: AsyncEngine, *, durable: bool = True) -> Database:
    """The executor for ``engine``'s database.

    ``durable=False`` is for bookkeeping a crash may lose without harm (the shared budget's claims,
    the ledger's counters): on SQLite its commits are not flushed to disk at once; on PostgreSQL the
    callers ask ``SET LOCAL synchronous_commit = off`` in their transactions.
    """
    url = engine.url.render_as_string(hide_password=False)
    if is_sqlite(url):
        return ThreadedSqlite(url, durable=durable)
    return AsyncPostgres(engine)
