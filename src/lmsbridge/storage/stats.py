"""Figures for ``lmsbridge status``, the demo and tests: sync rows per state, reasons, inbox size.

Read-only: nothing here takes part in moving a message or a record along.
"""

from __future__ import annotations

from sqlalchemy import func, select

from lmsbridge.storage.shared import Sql, guard
from lmsbridge.storage.tables import inbox, records, sync_state

__all__ = ["Stats"]


class Stats:
    """Counts over the sync rows and the inbox."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    @guard
    async def status_counts(self) -> dict[str, dict[str, int]]:
        """Sync rows per account and status: ``{account: {status: n}}``."""
        stmt = select(sync_state.c.account, sync_state.c.status, func.count()).group_by(
            sync_state.c.account, sync_state.c.status
        )
        out: dict[str, dict[str, int]] = {}
        for account, status, n in await self._sql.read(lambda conn: conn.execute(stmt).all()):
            out.setdefault(str(account), {})[str(status)] = int(n)
        return out

    @guard
    async def known_sources(self) -> list[str]:
        """Every source a stored record came from (configured now or not)."""
        stmt = select(records.c.source).distinct()
        return await self._sql.read(lambda conn: sorted(str(r[0]) for r in conn.execute(stmt)))

    @guard
    async def top_reasons(self, status: str, limit: int = 5) -> list[tuple[str, int]]:
        """The most common reasons among rows in ``status`` (parked, dead)."""
        stmt = (
            select(sync_state.c.reason, func.count())
            .where(sync_state.c.status == status)
            .group_by(sync_state.c.reason)
            .order_by(func.count().desc())
            .limit(limit)
        )
        return await self._sql.read(lambda conn: [(str(r[0]), int(r[1])) for r in conn.execute(stmt)])

    @guard
    async def inbox_count(self) -> int:
        """How many message ids the inbox remembers."""
        stmt = select(func.count()).select_from(inbox)
        return await self._sql.read(lambda conn: int(conn.execute(stmt).scalar() or 0))
