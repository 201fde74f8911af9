"""The repository: lmsbridge's persistence, one part per thing it owns. Connections never leave it.

=================  ======================  ==========================================
part               module                  owns
=================  ======================  ==========================================
``intake``         :mod:`.intake`          the inbox and the merged records
``leases``         :mod:`.leases`          sync rows: leases, intents, steps, status
``content``        :mod:`.content`         learning objects known per account
``directory``      :mod:`.directory`       each account's users by e-mail
``accounts``       :mod:`.accounts`        per-account bookkeeping (paused, filter)
``stats``          :mod:`.stats`           counts for ``status``, the demo and tests
=================  ======================  ==========================================

Every part runs its statements on the repository's one :class:`~lmsbridge.storage.shared.Sql`
(one database, one group commit), so writes of different parts made at the same moment share
a transaction. Callers take the part they need, behind its port in :mod:`lmsbridge.ports`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.storage.accounts import Accounts
from lmsbridge.storage.content import Content
from lmsbridge.storage.directory import Directory
from lmsbridge.storage.intake import Intake
from lmsbridge.storage.leases import Leases
from lmsbridge.storage.shared import Sql, guard
from lmsbridge.storage.stats import Stats
from lmsbridge.storage.tables import accounts, content, directory, inbox, metadata, records, sync_state

__all__ = ["PROBE_LOCK_WAIT", "Repository"]

PROBE_LOCK_WAIT = 5.0
"""Seconds the database probe waits, on PostgreSQL, for the locks a write to the live tables takes."""
_LIVE_TABLES = (inbox, records, sync_state, content, directory, accounts)  # what an event's intake and sync write


class Repository:
    """All persistence for lmsbridge over one async engine (SQLite or PostgreSQL), by part."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sql = Sql(engine)
        self.leases = Leases(self._sql)
        self.intake = Intake(self._sql, self.leases)
        self.content = Content(self._sql)
        self.directory = Directory(self._sql)
        self.accounts = Accounts(self._sql)
        self.stats = Stats(self._sql)

    @property
    def transactions(self) -> int:
        """Write transactions committed by this repository's group commit."""
        return self._sql.transactions

    async def create_schema(self) -> None:
        """Create the tables directly (tests and throwaway databases; production uses migrations)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            await self._sql.read(lambda conn: conn.execute(select(1)).scalar())
            return True
        except (SQLAlchemyError, OSError):
            return False

    @guard
    async def check_writes(self) -> None:
        """Raise :class:`~lmsbridge.errors.InfrastructureFault` unless a write transaction can begin
        and commit now (the worker's probe of a database it stopped consuming for).

        On PostgreSQL it also takes the lock an ``INSERT``/``UPDATE`` takes on each live table
        (``ROW EXCLUSIVE``), waiting at most :data:`PROBE_LOCK_WAIT`: a table another session has
        locked (``LOCK TABLE``, an ``ALTER TABLE``) fails the probe, as it fails every write. SQLite's
        ``BEGIN IMMEDIATE`` already takes the one lock there is.

        It writes a row to the inbox and deletes it in the same transaction, so its commit writes
        pages as an event's does: a full disk or a file that cannot be written fails it too.
        """
        await self._sql.write_alone(_probe_writes)

    async def close(self) -> None:
        """Stop the group-commit writer and release every connection."""
        await self._sql.close()
        await self.engine.dispose()


def _probe_writes(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(PROBE_LOCK_WAIT * 1000)}")
        names = ", ".join(table.name for table in _LIVE_TABLES)
        conn.exec_driver_sql(f"LOCK TABLE {names} IN ROW EXCLUSIVE MODE")
    # A row written and taken back in the same transaction: its commit writes pages (SQLite's WAL,
    # PostgreSQL's) as any event's does, so a full disk or a failing file fails the probe too.
    now = datetime.now(UTC)
    key = {"source": _PROBE_SOURCE, "message_id": uuid.uuid4().hex}
    conn.execute(insert(inbox).values(**key, event_type="probe", received_at=now, processed_at=now, record_ids=[]))
    conn.execute(delete(inbox).where(inbox.c.source == key["source"], inbox.c.message_id == key["message_id"]))


_PROBE_SOURCE = "(probe)"
"""The inbox rows the database probe writes and deletes are under this source, which no source can be named."""
