"""Schema migrations with Alembic, run from code (``lmsbridge migrate`` and at worker start).

Migrations cannot race: ten workers starting at once on a fresh database migrate it once.
On PostgreSQL the migrating transaction first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``), so the others wait, then find the schema current; on SQLite the
transaction begins with ``BEGIN IMMEDIATE`` (see :mod:`lmsbridge.storage.engine`), which holds
the database's write lock from the start.

A database already at the newest revision is left without importing Alembic: the newest is read
from the migration files' ``revision`` lines (:func:`head`). Alembic and Mako are about 11 MB of
every process's memory (``serve`` and ``worker`` both check the schema at start), and a worker
restarting with 100,000 events queued went past its 150 MB.

A worker starting while the database cannot be reached waits for it, as it waits for RabbitMQ
(:func:`upgrade_when_reachable`), then stops with one line naming the fault, not a traceback.

On PostgreSQL a migration waits at most :data:`LOCK_WAIT` seconds for each lock it takes on a table
(``SET LOCAL lock_timeout``), then gives its transaction up and tries again within the caller's
wait (``migrate.lock_wait``). Unbounded, a session holding a lock on a table it alters (a
transaction left open) stalled it without a word, and every reader of that table queued behind it.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.errors import InfrastructureFault
from lmsbridge.logs import get_logger
from lmsbridge.storage.engine import missing_sqlite_file
from lmsbridge.storage.shared import fault_name, sqlstate

if TYPE_CHECKING:
    from alembic.config import Config

log = get_logger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# The advisory lock's key: any fixed 64-bit number other applications on the database are unlikely to use.
MIGRATION_LOCK_KEY = 0x6C6D7362_6D696772  # "lmsbmigr"
LOCK_WAIT = 5.0
"""Seconds a PostgreSQL migration waits for a lock on a table (each try; readers queue behind it meanwhile)."""
LOCK_NOT_AVAILABLE = "55P03"
# The table a statement that waited for a lock names: the one it alters, writes, indexes or reads,
# and for CREATE TABLE the one its foreign key refers to (the only lock a new table waits for).
_TABLE = re.compile(
    r"^\s*(?:ALTER TABLE|UPDATE|DELETE FROM|INSERT INTO|LOCK TABLE|DROP TABLE|CREATE (?:UNIQUE )?INDEX \S+ ON)\s+"
    r'(?:ONLY\s+|IF EXISTS\s+)?"?([\w.]+)|\bREFERENCES\s+"?([\w.]+)|\bFROM\s+"?([\w.]+)',
    re.IGNORECASE,
)


_REVISION_LINE = re.compile(r"^(down_revision|revision)\s*=\s*(None|\"([^\"]+)\")\s*$", re.MULTILINE)


@functools.cache
def revisions() -> dict[str, str | None]:
    """Each packaged migration's revision -> the revision it follows, read from the files' own
    ``revision = "..."`` and ``down_revision = "..."`` lines (as Alembic reads them, without it)."""
    found: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        lines = {m.group(1): m.group(3) for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8"))}
        if "revision" in lines and lines["revision"] is not None:
            found[lines["revision"]] = lines.get("down_revision")
    return found


def head() -> str:
    """The newest revision: the one no other migration follows."""
    graph = revisions()
    followed = set(graph.values())
    [newest] = [revision for revision in graph if revision not in followed]
    return newest


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config  # here: imported only when a migration runs (the module's doc)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # The advisory lock first, unbounded: another worker's migration may rightly take long.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.execute(text(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT * 1000)}ms'"))
    current = _current(connection)
    if current is not None and not _known(current):  # Alembic's own word: a CommandError traceback
        raise InfrastructureFault(newer_schema(current))
    if revision == "head" and current == head():
        return  # nothing to do, and Alembic not imported for it
    from alembic import command  # here: only when a migration runs

    command.upgrade(alembic_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent; concurrent callers migrate once)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


async def upgrade_when_reachable(engine: AsyncEngine, *, wait: float) -> None:
    """:func:`upgrade`, retrying for up to ``wait`` seconds while the database cannot be reached
    (refused, timed out, not yet accepting: ``database.unreachable`` logged each time) or, on
    PostgreSQL, while another session holds a lock the migration needs (``migrate.lock_wait``).

    Raises :class:`InfrastructureFault` naming the fault's kind (never the driver's text, which can
    quote the URL) when the wait is over, and at once for any other fault (a database or role that
    does not exist, a migration that failed, a read-only SQLite file): waiting would not mend those.
    """
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            await upgrade(engine)
            return
        except (SQLAlchemyError, OSError) as exc:  # OSError takes TimeoutError in
            kind = fault_name(exc)
            locked = isinstance(exc, SQLAlchemyError) and sqlstate(exc) == LOCK_NOT_AVAILABLE
            if not locked and not _unreachable(exc):
                raise InfrastructureFault(f"database: {kind}") from exc
            table = _locked_table(exc) if locked else None
            if time.monotonic() + delay > deadline:
                if locked:
                    raise InfrastructureFault(
                        f"database: the migration needs a lock on {f'table {table}' if table else 'a table'} "
                        f"that another session holds ({kind}): end that session's transaction, then migrate again"
                    ) from exc
                raise InfrastructureFault(f"database: unreachable ({kind})") from exc
            if locked:
                log.warning("migrate.lock_wait", table=table, waited=LOCK_WAIT, retry_in=delay)
            else:
                log.warning("database.unreachable", error=kind, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _locked_table(exc: BaseException) -> str | None:
    """The table the statement that waited too long for its lock names, None if it names none."""
    statement = getattr(exc, "statement", None)
    found = _TABLE.search(statement) if isinstance(statement, str) else None
    return next((name for name in found.groups() if name), None) if found else None


def _unreachable(exc: BaseException) -> bool:
    """A fault that waiting can mend: no connection (refused, timed out, dropped), SQLite's file that
    cannot be opened yet (its directory not there) or another process holding its lock, PostgreSQL's
    connection faults (SQLSTATE class 08) and "starting up" (57P03).

    Nothing else: SQLite raises ``OperationalError`` for almost any fault (a table a migration
    creates already there, a read-only file), and taking each for "unreachable" retried it for the
    whole wait, then reported it as such.
    """
    if isinstance(exc, OSError):  # takes TimeoutError and ConnectionRefusedError in
        return True
    if not isinstance(exc, SQLAlchemyError):
        return False
    code = _sqlite_code(exc)
    if code is not None:
        return code == sqlite3.SQLITE_CANTOPEN or code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    if isinstance(exc, InterfaceError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True  # asyncpg's connection closed under the statement
    state = sqlstate(exc)
    return state is not None and (state.startswith("08") or state == "57P03")


def _sqlite_code(exc: SQLAlchemyError) -> int | None:
    """SQLite's (extended) result code for the fault, None when it did not come from SQLite."""
    orig = getattr(exc, "orig", None)
    code = getattr(getattr(orig, "__cause__", None) or orig, "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def _current(connection: Connection) -> str | None:
    """The revision Alembic recorded in its table (read directly: Alembic's own context logs at info)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def _recorded(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def schema_report(engine: AsyncEngine) -> str:
    """Where the schema is, for ``check``: ``"current"``, the revision it is at and what to run, or
    that a newer lmsbridge migrated it (``lmsbridge migrate`` cannot help there)."""
    current = await _recorded(engine)
    if current == head():
        return "current"
    if current is not None and not _known(current):
        return newer_schema(current)
    return f"at revision {current or 'none'}: run 'lmsbridge migrate'"


async def schema_behind(engine: AsyncEngine) -> str | None:
    """None when the database's schema is at the newest revision; otherwise what it is at:
    ``"none"`` for a database never migrated, else the revision it holds."""
    current = await _recorded(engine)
    return None if current == head() else (current or "none")


def _known(revision: str) -> bool:
    """Whether ``revision`` is one of this lmsbridge's migrations."""
    return revision in revisions()


def newer_schema(revision: str) -> str:
    """What to say of a database at ``revision``, a revision this lmsbridge does not know: a newer
    version migrated it, and only a newer version can run on it (there is no downgrade)."""
    return (
        f"the database is at revision {revision}, newer than this lmsbridge (newest it knows: {head()}): "
        "run the newer version"
    )


async def require_current_schema(engine: AsyncEngine) -> None:
    """For the commands that read the database (``status``, ``reconcile``): a schema not at the
    newest revision is an :class:`InfrastructureFault` saying what to do, instead of the driver's
    "no such table" inside the first query. So is a SQLite file that does not exist (a relative
    ``database_url`` read from another directory): connecting would create it, empty, where the
    operator stood. A database that cannot be reached is left to that query."""
    missing = missing_sqlite_file(engine.url)
    if missing is not None:
        raise InfrastructureFault(
            f"database: the SQLite file {missing} does not exist: run 'lmsbridge migrate' to create it, "
            "or set database_url to the worker's"
        )
    try:
        current = await _recorded(engine)
    except (SQLAlchemyError, OSError):
        return
    newest = head()
    if current == newest:
        return
    if current is not None and not _known(current):
        raise InfrastructureFault(newer_schema(current))
    raise InfrastructureFault(
        f"database: the schema is at revision {current or 'none'}, this lmsbridge needs {newest}: "
        "run 'lmsbridge migrate'"
    )
