"""Engine construction: SQLite (WAL, immediate write transactions, deferred reads) by default, PostgreSQL at scale."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

READ_ONLY = "lmsbridge_read_only"
"""Execution option of a connection that only reads: on SQLite its transaction begins deferred."""

LOCK_WAIT = 30.0
"""Seconds a write waits for SQLite's lock before it fails (``database is locked``)."""
_WAIT_FOR_LOCK = f"PRAGMA busy_timeout={int(LOCK_WAIT * 1000)}"
STATEMENT_WAIT = LOCK_WAIT
"""Seconds a PostgreSQL statement may take before it fails (asyncpg cancels it), as long as a SQLite
write waits for its lock. Unbounded, a lock held by another session (an operator's transaction left
open) or a server out of reach stopped every write, without a line in the log, for as long as it lasted."""


def is_sqlite(url: str) -> bool:
    """True when ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def missing_sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite ``url`` names, made absolute, when it does not exist (SQLite would create
    it, empty, on the first connection); None when it exists, or ``url`` names no such file (another
    database, an in-memory one, a ``file:`` URI)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri") or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database).absolute()
    return None if path.exists() else path


def create_engine(url: str, *, echo: bool = False, bounded: bool = True) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    On PostgreSQL a statement fails after :data:`STATEMENT_WAIT` seconds (``bounded=False``: never,
    for migrations, which may rightly take longer).

    ``synchronous=FULL`` because a message is acked after the commit: a commit lost to a power
    cut would be a lost event. ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of a write
    transaction, so two read-modify-write transactions (ours merge records) serialise instead of
    deadlocking; a connection marked :data:`READ_ONLY` begins deferred and takes no lock.
    """
    if not is_sqlite(url):
        connect_args = _postgres_args(url)
        if bounded:
            connect_args["command_timeout"] = STATEMENT_WAIT
        return create_async_engine(
            url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=connect_args
        )
    # One connection: SQLite has one writer at a time anyway, and waiting for the pool (in
    # asyncio) is far cheaper than waiting in SQLite's busy handler, which sleeps.
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
    configure_sqlite(engine.sync_engine)
    return engine


def _postgres_args(url: str) -> dict[str, Any]:
    """asyncpg's arguments: each prepared statement named uniquely (never ``__asyncpg_stmt_1__``
    twice on a server connection a pooler shares between clients), and with
    ``?prepared_statement_cache_size=0`` in the URL, asyncpg's own statement cache off too.

    The URL parameter is for PgBouncer in transaction mode (before 1.21, or without
    ``max_prepared_statements``): a statement prepared in one transaction may be gone in the next,
    on another server connection, and every write failed with ``prepared statement
    "__asyncpg_stmt_..." does not exist``; so each statement is prepared where it runs.
    """
    args: dict[str, Any] = {"prepared_statement_name_func": _statement_name}
    if make_url(url).query.get("prepared_statement_cache_size") == "0":
        args["statement_cache_size"] = 0
    return args


def _statement_name() -> str:
    return f"__lmsbridge_{uuid.uuid4().hex}__"


def configure_sqlite(engine: Engine, *, durable: bool = True, poll_lock: bool = False) -> None:
    """WAL, ``synchronous=FULL``, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` on ``engine``.

    ``durable=False`` (``synchronous=NORMAL``: a commit is not flushed to disk at once) is for
    bookkeeping a power cut may lose without harm: the shared budget's claims, the ledger's counters.

    ``poll_lock=True`` (an engine whose transactions begin on a thread of their own, never on the
    event loop: :class:`~lmsbridge.storage.database.ThreadedSqlite`): a write that finds the lock
    taken polls for it every fraction of a millisecond (:func:`begin_immediate`) instead of sleeping
    in SQLite's busy handler. Every other statement keeps the busy timeout.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(_WAIT_FOR_LOCK)
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read (see READ_ONLY) begins deferred: in WAL it takes no lock, so it never waits for a
        # writer nor makes one wait. ``BEGIN IMMEDIATE`` for a read held the write lock while it ran:
        # a reconcile pass reading its pages put the worker's writes to sleep in the busy handler.
        if conn.get_execution_options().get(READ_ONLY, False):
            conn.exec_driver_sql("BEGIN")
        elif poll_lock:
            try:
                begin_immediate(conn.connection.driver_connection)
            except sqlite3.OperationalError as exc:  # as SQLAlchemy would have raised it
                raise sa_exc.OperationalError("BEGIN IMMEDIATE", None, exc) from exc
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def begin_immediate(dbapi_conn: sqlite3.Connection, wait: float = LOCK_WAIT) -> None:
    """``BEGIN IMMEDIATE``, polling for the lock every 0.1-1 ms while another connection holds it.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries and serves
    nobody in order: a writer that lost to the repository's back-to-back group commits, or to the
    budget's claims in the same process, slept tens of milliseconds with a live sync waiting
    behind it. Polling finds the lock within a millisecond of its release.
    """
    deadline = time.monotonic() + wait
    pause = 0.0001
    dbapi_conn.execute("PRAGMA busy_timeout=0")  # only for the BEGIN: the statements after it keep waiting
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                # SQLITE_BUSY (its extended codes share the low byte): another connection holds the lock.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 0.001)
    finally:
        dbapi_conn.execute(_WAIT_FOR_LOCK)
