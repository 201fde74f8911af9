"""Hot statements compiled once and run on SQLite's driver, with SQLAlchemy's own type conversions.

SQLAlchemy Core spends about 30 us of Python on every ``execute`` (cache key, parameter
processing, the result's metadata) for a statement SQLite runs in 2-10 us. The worker runs
about ten such statements per event, so that overhead was a fifth of a busy worker's CPU.
:class:`Prepared` keeps the statement as a Core construct (one definition for both databases)
and, on SQLite, compiles it once per set of parameter names, finds the converters of its
parameters and columns once (the types' public ``bind_processor`` / ``result_processor``: the
same conversions SQLAlchemy applies, so rows written here read back the same through Core and the
other way round), and runs it on the ``sqlite3`` cursor. A driver error is raised as the
:class:`~sqlalchemy.exc.DBAPIError` SQLAlchemy would have raised, so
:func:`~lmsbridge.storage.shared.guard` and the group commit judge it as before.

On PostgreSQL (and for a statement the shortcut cannot take: an expanding ``IN``, a column
default to compute) it is plain ``conn.execute``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from lmsbridge.storage.tables import UtcDateTime, sqlite_utc_binder

__all__ = ["Prepared"]

Params = Mapping[str, Any]
_Convert = Callable[[Any], Any] | None


class _Compiled:
    """One statement compiled for SQLite with one set of parameter names."""

    __slots__ = ("columns", "converters", "fixed", "names", "readers", "required", "sql")

    def __init__(self, compiled: SQLCompiler, dialect: Dialect) -> None:
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        binds = compiled.binds
        self.converters: tuple[_Convert, ...] = tuple(_binder(binds[name].type, dialect) for name in self.names)
        self.fixed = compiled.params  # values written into the statement (``status == 'synced'``)
        self.required = frozenset(name for name in self.names if binds[name].required)
        statement: Any = compiled.statement
        if getattr(statement, "is_select", False):  # keys as Core's rows have them (a repeated name gets _1)
            keys, columns = list(statement.selected_columns.keys()), list(statement.selected_columns)
        else:
            columns = list(getattr(statement, "_returning", ()) or ())
            keys = [c.key for c in columns]
        self.columns: tuple[str, ...] = tuple(keys)
        self.readers: tuple[_Convert, ...] = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )

    def values(self, params: Params) -> tuple[Any, ...]:
        """The driver's values, in order; a value its type cannot take raises as Core would
        (:class:`~sqlalchemy.exc.StatementError` around the converter's own error)."""
        out = []
        try:
            for name, convert in zip(self.names, self.converters, strict=True):
                if name in params:
                    value = params[name]
                elif name in self.required:
                    raise KeyError(f"a value is required for bind parameter {name!r}")
                else:
                    value = self.fixed[name]
                out.append(convert(value) if convert is not None else value)  # None too, as Core does
        except Exception as exc:
            why = f"({type(exc).__module__}.{type(exc).__name__}) {exc}"
            raise StatementError(why, self.sql, None, exc, hide_parameters=True) from exc
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        return {
            key: (read(value) if read is not None else value)
            for key, read, value in zip(self.columns, self.readers, raw, strict=True)
        }


def _binder(type_: TypeEngine[Any], dialect: Dialect) -> _Convert:
    """Core's conversion of a parameter of ``type_`` (a time's on SQLite in one step: :func:`sqlite_utc_binder`)."""
    core = type_.dialect_impl(dialect).bind_processor(dialect)
    if isinstance(type_, UtcDateTime) and dialect.name == "sqlite" and core is not None:
        return sqlite_utc_binder(core)
    return core


class Prepared:
    """A Core statement run through SQLite's driver (compiled once per parameter names), else by Core."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, ...], _Compiled | None] = {}

    def _on_driver(self, conn: Connection, keys: tuple[str, ...]) -> tuple[sqlite3.Connection, _Compiled] | None:
        """The sqlite3 connection and the compiled statement, or None to run through Core."""
        if conn.dialect.name != "sqlite":
            return None
        raw = conn.connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            return None  # aiosqlite's adapter: Core knows how to drive it
        if keys in self._compiled:
            compiled = self._compiled[keys]
        else:
            compiled = self._compiled[keys] = self._compile(conn.dialect, keys)
        if compiled is None:
            return None
        return raw, compiled

    def _compile(self, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled | None:
        assert isinstance(self.statement, ClauseElement)
        compiled = self.statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        expanding = any(b.expanding for b in compiled.binds.values())
        defaults = compiled.insert_prefetch or compiled.update_prefetch  # Python-side column defaults
        if expanding or defaults or not compiled.positional:
            return None
        return _Compiled(compiled, dialect)

    def execute(self, conn: Connection, params: Params) -> int:
        """Run it once; the rows it changed."""
        driver = self._on_driver(conn, tuple(params))
        if driver is None:
            return int(conn.execute(self.statement, dict(params)).rowcount or 0)
        raw, compiled = driver
        values = compiled.values(params)
        cursor = _run(raw, compiled.sql, lambda c: c.execute(compiled.sql, values), values)
        changed = int(cursor.rowcount or 0)
        cursor.close()
        return changed

    def execute_many(self, conn: Connection, rows: Sequence[Params]) -> None:
        """Run it once per row of parameters (every row with the same names)."""
        if not rows:
            return
        driver = self._on_driver(conn, tuple(rows[0]))
        if driver is None:
            conn.execute(self.statement, [dict(r) for r in rows])
            return
        raw, compiled = driver
        values = [compiled.values(r) for r in rows]
        _run(raw, compiled.sql, lambda c: c.executemany(compiled.sql, values), values).close()

    def first(self, conn: Connection, params: Params) -> dict[str, Any] | None:
        """Its first row by column name (None without one)."""
        driver = self._on_driver(conn, tuple(params))
        if driver is None:
            found = conn.execute(self.statement, dict(params)).mappings().first()
            return dict(found) if found is not None else None
        raw, compiled = driver
        values = compiled.values(params)
        cursor = _run(raw, compiled.sql, lambda c: c.execute(compiled.sql, values), values)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return compiled.row(row) if row is not None else None

    def scalar(self, conn: Connection, params: Params) -> Any:
        """The first column of its first row (None without one)."""
        row = self.first(conn, params)
        return next(iter(row.values())) if row else None


def _run(raw: sqlite3.Connection, sql: str, call: Callable[[sqlite3.Cursor], Any], values: Any) -> sqlite3.Cursor:
    """``call`` on a new cursor; a driver error raised as SQLAlchemy's (its parameters hidden)."""
    cursor = raw.cursor()
    try:
        call(cursor)
    except sqlite3.Error as exc:
        cursor.close()
        wrapped = DBAPIError.instance(sql, values, exc, sqlite3.Error, hide_parameters=True)
        assert isinstance(wrapped, BaseException)
        raise wrapped from exc
    return cursor
