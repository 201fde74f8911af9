"""Where the repository's SQL runs: a thread of its own for SQLite, the event loop for PostgreSQL.

The repository writes its statements as plain functions of a synchronous SQLAlchemy
:class:`~sqlalchemy.Connection`, and hands them here:

* **SQLite**: one dedicated thread with one ``pysqlite`` connection runs a whole batch of
  them per hop. Through aiosqlite every DBAPI call (cursor, execute, fetch, close) is a hop
  between threads, which costs ten times the statement itself; here a batch costs one.
* **PostgreSQL**: the async engine (asyncpg) runs the same functions with ``run_sync``.

Both run a batch in one transaction and return its results in order, or raise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.storage.engine import configure_sqlite, is_sqlite

T = TypeVar("T")
SyncWork = Callable[[Connection], Any]

__all__ = ["Database", "SyncWork", "open_database"]


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

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite+pysqlite")
        self.engine: Engine = create_sync_engine(sync_url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
        configure_sqlite(self.engine)
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmsbridge-sqlite")

    def _write(self, batch: Sequence[SyncWork]) -> list[Any]:
        with self.engine.begin() as conn:
            return _run_all(conn, batch)

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
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


def open_database(engine: AsyncEngine) -> Database:
    """The executor for ``engine``'s database."""
    url = engine.url.render_as_string(hide_password=False)
    if is_sqlite(url):
        return ThreadedSqlite(url)
    return AsyncPostgres(engine)
