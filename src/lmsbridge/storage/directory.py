"""The local directory of each LMS account's users: e-mail key -> StackOne user id.

Filled by :class:`lmsbridge.people.People` from StackOne's user lists, so a person is looked
up in the LMS once, not on every write.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import bindparam, select

from lmsbridge.domain.events import email_key
from lmsbridge.storage.prepared import Prepared
from lmsbridge.storage.shared import Sql, guard
from lmsbridge.storage.tables import directory

__all__ = ["Directory"]


class Directory:
    """Each account's users by e-mail (implements :class:`lmsbridge.ports.DirectoryPort`)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql
        # Read on every new person's lookup: compiled once (Core cost ~200 us a call here).
        self._user_id = Prepared(
            select(directory.c.user_id).where(
                directory.c.account == bindparam("b_account"), directory.c.email == bindparam("b_email")
            )
        )

    @guard
    async def user_id(self, account: str, email: str) -> str | None:
        """The StackOne user id for ``email`` on ``account``, from the local directory."""
        params = {"b_account": account, "b_email": email_key(email)}
        found = await self._sql.read(lambda conn: self._user_id.scalar(conn, params))
        return str(found) if found is not None else None

    @guard
    async def save_users(self, account: str, users: Iterable[tuple[str, str]]) -> int:
        """Store (email, user id) pairs in the account's directory; returns how many."""
        now = datetime.now(UTC)
        latest = {email_key(email): uid for email, uid in users}  # one row per e-mail: the last one listed
        if not latest:
            return 0
        rows = [
            {"account": account, "email": email, "user_id": uid, "updated_at": now} for email, uid in latest.items()
        ]
        stmt = self._sql.insert(directory)
        upsert = stmt.on_conflict_do_update(
            index_elements=["account", "email"],
            set_={"user_id": stmt.excluded.user_id, "updated_at": stmt.excluded.updated_at},
        )
        await self._sql.write(lambda conn: conn.execute(upsert, rows))
        return len(rows)

    @guard
    async def forget_user(self, account: str, email: str, user_id: str) -> None:
        """Drop ``email``'s directory entry on ``account`` if it still names ``user_id`` (the LMS said 404)."""
        stmt = directory.delete().where(
            directory.c.account == account, directory.c.email == email_key(email), directory.c.user_id == user_id
        )
        await self._sql.write(lambda conn: conn.execute(stmt))
