"""Where the repository's SQL runs: the event loop with a helper thread for SQLite, the event loop for PostgreSQL.

The repository writes its statements as plain functions of a synchronous SQLAlchemy
:class:`~sqlalchemy.Connection`, and hands them here:

* **SQLite**: a write transaction's ``BEGIN IMMEDIATE`` (which may wait for another process's
  lock) and its commit (an fsync) run on a helper thread; its statements run on the event loop
  in between, one batch at a time on one ``pysqlite`` connection. Reads run on the thread, on a
  connection of their own (WAL: they see what is committed and never wait for a writer).
  Statements on the thread each paid a hand-over of the GIL: ``sqlite3`` releases it around
  every step, and the thread then waited for the busy event loop to give it back (~12 times an
  event, most of the thread's time); on the loop nobody else wants it. Through aiosqlite every
  DBAPI call was a hop between threads; here a batch costs two.
* **PostgreSQL**: the async engine (asyncpg) runs the same functions with ``run_sync``.

Both run a batch in one transaction and return its results in order, or raise.
:func:`is_data_error` tells a statement refused for the data it carries (too long, a NUL on
PostgreSQL, a date out of range, a constraint) from a database that failed (connection lost,
locked, shutting down): the first fails again however often it is retried, the second heals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
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
    """SQLite through ``pysqlite``: a write's statements on the event loop, its BEGIN and commit on a thread.

    The writing connection is only ever used by one of them at a time (the thread begins, the
    loop runs the batch, the thread commits), so it is opened with ``check_same_thread=False``.
    """

    def __init__(self, url: str, *, durable: bool = True) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        args = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_sync_engine(sync_url, connect_args=args, pool_size=1, max_overflow=0)
        configure_sqlite(self.engine, durable=durable, poll_lock=True)
        self._reader: Engine = create_sync_engine(sync_url, connect_args=args, pool_size=1, max_overflow=0)
        configure_sqlite(self._reader, durable=durable, poll_lock=True)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmsbridge-sqlite")
        # One write at a time, begin to commit: a second begin queued on the thread would wait there
        # for the one connection, with the first write's commit queued behind it.
        self._writing = asyncio.Lock()

    def _begin(self) -> Connection:
        conn = self.engine.connect()
        try:
            conn.begin()  # BEGIN IMMEDIATE (engine.begin_immediate), polling while another holds the lock
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _end(conn: Connection, *, commit: bool) -> None:
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.close()

    def _abandon(self, begun: asyncio.Future[Connection]) -> None:
        """A transaction begun for a caller cancelled meanwhile: rolled back at once, here on the loop
        (queued behind another write's begin on the thread, it would wait for the connection it holds)."""
        if not begun.cancelled() and begun.exception() is None:
            self._end(begun.result(), commit=False)

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self._reader.connect().execution_options(**{READ_ONLY: True}) as conn:
            return work(conn)

    async def write(self, batch: Sequence[SyncWork]) -> list[Any]:
        """Run ``batch`` in one ``BEGIN IMMEDIATE`` transaction: begun and committed on the thread."""
        loop = asyncio.get_running_loop()
        async with self._writing:
            begun = loop.run_in_executor(self._thread, self._begin)
            try:
                conn = await asyncio.shield(begun)
            except asyncio.CancelledError:
                begun.add_done_callback(self._abandon)
                raise
            try:
                results = _run_all(conn, batch)
            except BaseException:
                self._end(conn, commit=False)  # nothing to flush: no need for the thread
                raise
            await loop.run_in_executor(self._thread, functools.partial(self._end, conn, commit=True))
            return results

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on the thread's reading connection (WAL: it never waits for a writer)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, work)

    async def close(self) -> None:
        """Close the connections on their thread, then stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.engine.dispose)
        await loop.run_in_executor(self._thread, self._reader.dispose)
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
