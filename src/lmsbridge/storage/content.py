"""Learning objects known on each LMS account, with the newest title written there.

The ``content`` table saves a sync the upsert of an object the account already has: an
object is written again only when a newer event carried another title.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from lmsbridge.domain.records import title_key
from lmsbridge.ports import ContentItem
from lmsbridge.storage.shared import Sql, guard
from lmsbridge.storage.tables import content

__all__ = ["Content"]


class Content:
    """Which learning objects each account has (implements :class:`lmsbridge.ports.ContentPort`)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    @guard
    async def missing_content(self, account: str, items: Iterable[ContentItem]) -> list[ContentItem]:
        """Of (reference, title, title time) items, those whose title the LMS of ``account`` lacks.

        An item is missing when its object was never upserted there, or when the title written
        is another, older one (the same text at another time needs no write).
        """
        wanted = {ref: (ref, title, at) for ref, title, at in items}
        if not wanted:
            return []
        stmt = select(content.c.external_reference, content.c.title, content.c.title_at).where(
            content.c.account == account, content.c.external_reference.in_(list(wanted))
        )
        known = await self._sql.read(lambda conn: {r[0]: title_key(r[1], r[2]) for r in conn.execute(stmt)})

        def missing(ref: str, title: str, at: datetime | None) -> bool:
            return ref not in known or (title != known[ref][1] and title_key(title, at) > known[ref])

        return [item for ref, item in wanted.items() if missing(*item)]

    @guard
    async def mark_content(self, account: str, items: Sequence[ContentItem]) -> None:
        """Remember that these learning objects exist on ``account``, each with its newest title (and its time)."""
        if not items:
            return
        now = datetime.now(UTC)
        refs = [ref for ref, _, _ in items]
        current = select(content.c.external_reference, content.c.title, content.c.title_at).where(
            content.c.account == account, content.c.external_reference.in_(refs)
        )

        def work(conn: Connection) -> None:
            known = {r[0]: title_key(r[1], r[2]) for r in conn.execute(current)}
            for ref, title, at in items:
                row = {"title": title, "title_at": at, "synced_at": now}
                where = (content.c.account == account, content.c.external_reference == ref)
                if ref not in known:
                    # Another worker may insert the same object at the same moment: then ours is an update.
                    added = conn.execute(
                        self._sql.insert(content)
                        .values(account=account, external_reference=ref, **row)
                        .on_conflict_do_nothing(index_elements=["account", "external_reference"])
                    )
                    if added.rowcount:
                        continue
                    theirs = conn.execute(select(content.c.title, content.c.title_at).where(*where)).one()
                    known[ref] = title_key(theirs[0], theirs[1])
                if title_key(title, at) > known[ref]:
                    conn.execute(update(content).where(*where).values(**row))

        await self._sql.write(work)
