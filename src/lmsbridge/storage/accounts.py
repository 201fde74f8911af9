"""Per-account bookkeeping: paused (and why), the e-mail filter's behaviour, the directory's age.

One ``accounts`` row per LMS account, written the first time anything is noted about it; an
account never seen reads as the defaults of :class:`~lmsbridge.ports.AccountState`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from lmsbridge.ports import UNSET, AccountState, Unset
from lmsbridge.storage.prepared import Prepared
from lmsbridge.storage.shared import Sql, clip_text, guard, utc
from lmsbridge.storage.tables import accounts

__all__ = ["Accounts"]


class Accounts:
    """Each account's bookkeeping (implements :class:`lmsbridge.ports.AccountPort`)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql
        # Read on every new person's lookup: compiled once (Core cost ~200 us a call here).
        self._row = Prepared(select(accounts).where(accounts.c.account == bindparam("b_account")))

    @guard
    async def account(self, account: str) -> AccountState:
        """Bookkeeping for ``account`` (defaults when never seen)."""
        params = {"b_account": account}
        row = await self._sql.read(lambda conn: self._row.first(conn, params))
        if row is None:
            return AccountState(account)
        return AccountState(
            account=account,
            paused=row["paused"],
            reason=row["reason"],
            directory_refreshed_at=utc(row["directory_refreshed_at"]),
            email_filter=row["email_filter"] or "unknown",
        )

    @guard
    async def update_account(
        self,
        account: str,
        *,
        paused: bool | Unset = UNSET,
        reason: str | Unset | None = UNSET,
        status: int | Unset | None = UNSET,
        since: datetime | Unset | None = UNSET,
        directory_refreshed_at: datetime | Unset | None = UNSET,
        email_filter: str | Unset = UNSET,
    ) -> None:
        """Upsert the fields given for ``account``; the others keep their values (a new row: not paused).

        None clears a field (a resumed account: ``reason=None, status=None``). ``reason`` is
        free text from outside (StackOne's error message): stored without NULs, clipped.
        """
        given: dict[str, Any] = {
            "paused": paused,
            "reason": clip_text(reason) if isinstance(reason, str) else reason,
            "status": status,
            "since": since,
            "directory_refreshed_at": directory_refreshed_at,
            "email_filter": email_filter,
        }
        values = {k: v for k, v in given.items() if v is not UNSET}
        stmt = self._sql.insert(accounts).values(**{"account": account, "paused": False, **values})
        set_ = {k: stmt.excluded[k] for k in values}
        upsert = (
            stmt.on_conflict_do_update(index_elements=["account"], set_=set_)
            if set_
            else stmt.on_conflict_do_nothing(index_elements=["account"])
        )
        await self._sql.write(lambda conn: conn.execute(upsert))
