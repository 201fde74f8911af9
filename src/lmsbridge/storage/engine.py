"""Engine construction: SQLite (WAL, immediate transactions) by default, PostgreSQL at scale."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

READ_ONLY = "lmsbridge_read_only"
"""Execution option of a connection that only reads: on SQLite its transaction begins deferred."""


def is_sqlite(url: str) -> bool:
    """True when ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    ``synchronous=FULL`` because a message is acked after the commit: a commit lost to a power
    cut would be a lost event. ``BEGIN IMMEDIATE`` takes SQLite's write lock at the start of a transaction, so two
    read-modify-write transactions (ours merge records) serialise instead of deadlocking.
    """
    if not is_sqlite(url):
        return create_async_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    # One connection: SQLite has one writer at a time anyway, and waiting for the pool (in
    # asyncio) is far cheaper than waiting in SQLite's busy handler, which sleeps.
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
    configure_sqlite(engine.sync_engine)
    return engine


def configure_sqlite(engine: Engine, *, durable: bool = True) -> None:
    """WAL, ``synchronous=FULL``, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` on ``engine``.

    ``durable=False`` (``synchronous=NORMAL``: a commit is not flushed to disk at once) is for
    bookkeeping a power cut may lose without harm: the shared budget's claims, the ledger's counters.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read (see READ_ONLY) begins deferred: in WAL it takes no lock, so it never waits for a
        # writer nor makes one wait. ``BEGIN IMMEDIATE`` for a read held the write lock while it ran:
        # a reconcile pass reading its pages put the worker's writes to sleep in the busy handler.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
