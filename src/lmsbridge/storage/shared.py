"""What every part of the repository shares: one database, one group commit, one error guard.

The parts (:mod:`~lmsbridge.storage.intake`, :mod:`~lmsbridge.storage.leases`,
:mod:`~lmsbridge.storage.content`, :mod:`~lmsbridge.storage.directory`,
:mod:`~lmsbridge.storage.accounts`, :mod:`~lmsbridge.storage.stats`) each hold the same
:class:`Sql`: their reads go to one :class:`~lmsbridge.storage.database.Database` and their
writes queue in one :class:`~lmsbridge.storage.group_commit.GroupCommit`, so a lease taken
and an event stored at the same moment still share a transaction.

Every public method of a part is wrapped in :func:`guard`: database faults surface as
:class:`~lmsbridge.errors.InfrastructureFault`, so the consumer requeues without using up a
record's attempts; a statement refused for its own data (a title with a NUL on PostgreSQL, a
reference longer than its column, a date past year 9999) as a
:class:`~lmsbridge.errors.DeadLetter` with reason ``unstorable``: retrying it could never
succeed, so it fails that event (or sync) alone and for good, with the database's reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.domain import Rank, RecordState
from lmsbridge.errors import DeadLetter, InfrastructureFault
from lmsbridge.storage.database import is_data_error, open_database
from lmsbridge.storage.engine import STATEMENT_WAIT
from lmsbridge.storage.group_commit import GroupCommit

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["UNSTORABLE", "Sql", "clip_text", "dialect_insert", "fault_name", "guard", "record_state", "sqlstate", "utc"]

UNSTORABLE = "unstorable"
"""Dead-letter reason: the database refused the message's own data (retrying cannot help)."""


def dialect_insert(dialect: str) -> Any:
    """The ``INSERT`` construct with ``ON CONFLICT`` for ``dialect`` (PostgreSQL's, else SQLite's)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class Sql:
    """The one database and group commit every part of a repository runs its statements on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.insert = dialect_insert(self.dialect)
        self._db = open_database(engine)
        self._group = GroupCommit(self._db)

    @property
    def transactions(self) -> int:
        """Write transactions committed by the group commit."""
        return self._group.batches

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` outside any write transaction."""
        return await self._db.read(work)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in the next shared write transaction; its result once committed."""
        return await self._group.run(work)

    async def write_alone(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in a write transaction of its own (a probe, whose session settings and
        failure must not reach other writes)."""
        (result,) = await self._db.write([work])
        return result  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Stop the group-commit writer and release the database's connections (not the engine)."""
        await self._group.close()
        await self._db.close()


def guard(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn driver and SQLAlchemy errors into InfrastructureFault (our fault, not the record's),
    or into a dead letter (``unstorable``) when the database refused the statement's own data."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except SQLAlchemyError as exc:
            if is_data_error(exc):
                raise DeadLetter(UNSTORABLE, f"the database refused the data: {_complaint(exc)}") from exc
            raise InfrastructureFault(f"database: {fault_name(exc)}") from exc
        except TimeoutError as exc:  # asyncpg's command_timeout
            raise InfrastructureFault(
                f"database: no answer within {STATEMENT_WAIT:g} s"
                " (a lock another session holds, or the server out of reach)"
            ) from exc
        except OSError as exc:
            raise InfrastructureFault(f"database: {exc.strerror or type(exc).__name__}") from exc

    return wrapper


def fault_name(exc: BaseException) -> str:
    """``DBAPIError (DeadlockDetectedError, SQLSTATE 40P01)``, ``OperationalError (OperationalError,
    SQLITE_FULL)``: the kind of fault, never the driver's text (which may quote the statement's
    values). Anything but a SQLAlchemy error is named by its type (``ConnectionRefusedError``)."""
    if not isinstance(exc, SQLAlchemyError):
        return type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is None:
        return type(exc).__name__
    cause = getattr(orig, "__cause__", None) or orig  # asyncpg's error under SQLAlchemy's adapter
    state = sqlstate(exc)
    code = getattr(cause, "sqlite_errorname", None)  # SQLite's result code: SQLITE_FULL, SQLITE_BUSY
    detail = type(cause).__name__ + (f", SQLSTATE {state}" if state is not None else "")
    detail += f", {code}" if isinstance(code, str) else ""
    return f"{type(exc).__name__} ({detail})"


def sqlstate(exc: SQLAlchemyError) -> str | None:
    """PostgreSQL's SQLSTATE for the fault (``40P01``), None when the driver gave none (SQLite)."""
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None) or orig
    state = getattr(cause, "sqlstate", None) or getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _complaint(exc: SQLAlchemyError) -> str:
    """The driver's one-line reason (e.g. ``value too long for type character varying(512)``).

    Never SQLAlchemy's own text, which repeats the statement's parameters, the value itself.
    """
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.replace("\x00", "")[:200]


def clip_text(message: str) -> str:
    """Free text from outside (an error message) as a column can hold it: no NUL, 2,000 characters."""
    return message.replace("\x00", "\ufffd")[:2000]


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware time (a naive one is taken as UTC)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def record_state(row: Any) -> RecordState:
    """The merged state a ``records`` row holds."""
    return RecordState(
        rank=Rank(row["rank"]),
        learning_object_ref=row["learning_object_ref"],
        title=row["title"],
        title_at=utc(row["title_at"]),
        email=row["person_key"],
        assigned_at=utc(row["assigned_at"]),
        due_date=utc(row["due_date"]),
        progress=row["progress"],
        completed_at=utc(row["completed_at"]),
        passed=row["passed"],
        score=row["score"],
        cycle_at=utc(row["cycle_at"]),
    )
