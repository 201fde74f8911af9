"""E-mail -> StackOne user id, for one account, trusting no e-mail filter blindly.

``filter[email]`` is honoured by few LMSs, so every returned row's e-mail is checked. E-mails
are compared by :func:`lmsbridge.domain.events.email_key` (case, Unicode form, invisible
characters and an IDNA-encoded domain folded), as records are keyed. The filter is asked for the
key; when it finds nobody for a non-ASCII key, it is asked again for the key's other
:func:`~lmsbridge.domain.events.spellings` (domain ``xn--``-encoded, then decomposed), which a filter
comparing exactly may hold: an ASCII key costs one call, as before.
When an account is seen to ignore the filter, lmsbridge stops asking it and relies on a
local directory of the account's users, filled by paging ``GET /unified/lms/users`` and
refreshed with ``filter[updated_after]``. A person still unknown is parked, not dropped.

Ids found are kept in memory for at most ``refresh_after`` (``stackone.directory_refresh_seconds``),
50,000 at most (the oldest go first; ~440 bytes each, 22 MB), and dropped for an account whenever
its directory is refreshed, so a user deleted and created again in the LMS is not written to under
the old id until a restart. A write answered 404 for a user id we knew asks
:meth:`People.look_again`: the old id is forgotten (memory and directory) and the person is looked
up afresh, once.

An e-mail may name several LMS users: a leaver's deactivated account and the new, active one.
An active user is preferred (``active`` true, ``"true"`` or absent); an inactive one is used only
when no active user has the e-mail, as before. The directory does not keep whether the user it
names is active (that would need a column, so a migration), so the choice is made among the rows
of one listing, and an inactive user is written to the directory only where it names nobody yet:
a refresh re-listing a user just deactivated never displaces the mapping it holds.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from lmsbridge.domain.events import email_key, spellings
from lmsbridge.errors import ParkRecord
from lmsbridge.ports import AccountPort, DirectoryPort, StackOnePort, UserRow

USER_NOT_FOUND = "user_not_found"


class People:
    """Resolves people to StackOne user ids per account, with a local directory as cache."""

    def __init__(
        self,
        directory: DirectoryPort,
        accounts: AccountPort,
        stackone: StackOnePort,
        *,
        refresh_after: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_remembered: int = 50_000,
    ) -> None:
        self._directory = directory
        self._accounts = accounts
        self._stackone = stackone
        self._refresh_after = timedelta(seconds=refresh_after)
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        # -> (user id, when found), oldest first: expired ids go from the front as new ones come in
        self._cache: OrderedDict[tuple[str, str], tuple[str, datetime]] = OrderedDict()
        self._max_remembered = max_remembered
        self._lookups: dict[tuple[str, str], asyncio.Future[str]] = {}

    def __len__(self) -> int:
        """How many people's ids are held in memory."""
        return len(self._cache)

    async def resolve(self, account: str, email: str) -> str:
        """The StackOne user id of ``email`` on ``account``; raises ParkRecord(user_not_found).

        Concurrent calls for one person share one lookup: a new person's assignment and
        completion, or a team's records synced side by side, ask StackOne once, not once each.
        """
        key = (account, email_key(email))
        cached = self._cached(key)
        if cached:
            return cached
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(*key))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda done: self._forget(key, done))
        # Shielded: one caller cancelled (its message returned at shutdown) does not fail the others.
        return await asyncio.shield(lookup)

    async def look_again(self, account: str, email: str, stale: str) -> str:
        """After the LMS answered 404 for ``stale``: forget it and find the person afresh.

        Drops ``stale`` from memory and from the directory (if it still names it there), then
        asks the LMS (the e-mail filter, or a directory refresh, whatever its age). Returns the
        id found, which the caller compares with ``stale``; raises ParkRecord(user_not_found)
        when the LMS no longer has the person.
        """
        key = (account, email_key(email))
        entry = self._cache.get(key)
        if entry is not None and entry[0] == stale:
            del self._cache[key]
        await self._directory.forget_user(account, key[1], stale)
        return await self._lookup(*key, force_refresh=True)

    def _cached(self, key: tuple[str, str]) -> str | None:
        """The id remembered for ``key``, unless older than the directory refresh interval."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        user_id, found_at = entry
        if self._clock() - found_at >= self._refresh_after:
            del self._cache[key]
            return None
        return user_id

    def _remember(self, key: tuple[str, str], user_id: str) -> None:
        """Hold ``key``'s id, then let go of those older than the refresh interval, and of the
        oldest past ``max_remembered``: ids of people never asked for again are not kept for ever."""
        now = self._clock()
        cache = self._cache
        cache[key] = (user_id, now)
        cache.move_to_end(key)
        while len(cache) > self._max_remembered or now - next(iter(cache.values()))[1] >= self._refresh_after:
            cache.popitem(last=False)

    def _forget(self, key: tuple[str, str], done: asyncio.Future[str]) -> None:
        self._lookups.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so a lookup whose callers all left logs no warning

    async def _lookup(self, account: str, email: str, *, force_refresh: bool = False) -> str:
        cached = await self._directory.user_id(account, email)
        if cached:
            self._remember((account, email), cached)
            return cached
        state = await self._accounts.account(account)
        if state.email_filter != "ignored":
            found = await self._by_filter(account, email, known=state.email_filter)
            if found:
                self._remember((account, email), found)
                return found
        async with self._locks.setdefault(account, asyncio.Lock()):
            found = await self._directory.user_id(account, email)
            if found is None:
                state = await self._accounts.account(account)
                refreshed = state.directory_refreshed_at
                if force_refresh or refreshed is None or self._clock() - refreshed >= self._refresh_after:
                    await self.refresh(account)
                    found = await self._directory.user_id(account, email)
        if found is None:
            raise ParkRecord(USER_NOT_FOUND, f"no LMS user with this e-mail on account {account}")
        self._remember((account, email), found)
        return found

    async def _by_filter(self, account: str, email: str, *, known: str) -> str | None:
        rows = await self._stackone.find_users_by_email(account, email)
        # The filter may compare exactly, and a non-ASCII key is not how the platform and the LMS
        # may both write the e-mail (domain xn--encoded, or decomposed): asked again so, on a miss.
        for spelling in [] if rows else spellings(email):
            rows = await self._stackone.find_users_by_email(account, spelling)
            if rows:
                break
        # Reversed: among users in the same state the first listed wins, as before.
        matches = [r for r in rows if _email_of(r) == email]
        match = _best_by_email(reversed(matches)).get(email, (None, False))[0]
        others = [r for r in rows if _email_of(r) != email]
        if others:
            # The LMS ignored the filter: never ask it again, use the directory instead.
            await self._accounts.update_account(account, email_filter="ignored")
            await self._save(account, others)
        elif match and known != "honoured":
            await self._accounts.update_account(account, email_filter="honoured")
        if match:
            await self._directory.save_users(account, [(email, match)])
        return match

    async def refresh(self, account: str) -> int:
        """Page the account's users into the directory (only changes since the last refresh).

        The ids remembered in memory for the account are dropped: the directory is the truth now.
        """
        state = await self._accounts.account(account)
        started = self._clock()
        count = 0
        async for page in self._stackone.iter_users(account, updated_after=state.directory_refreshed_at):
            count += await self._save(account, page)
        await self._accounts.update_account(account, directory_refreshed_at=started)
        for key in [key for key in self._cache if key[0] == account]:
            del self._cache[key]
        return count

    async def _save(self, account: str, rows: Iterable[UserRow]) -> int:
        """Write listed users to the directory, one per e-mail; returns how many were written.

        An inactive user is written only where the directory names nobody for the e-mail, so it
        never displaces a user written before: from an earlier page, refresh or lookup.
        """
        pairs = []
        for email, (user_id, active) in _best_by_email(rows).items():
            if active or await self._directory.user_id(account, email) is None:
                pairs.append((email, user_id))
        return await self._directory.save_users(account, pairs)


def _email_of(row: UserRow) -> str:
    return email_key(row.email or "")


def _is_active(row: UserRow) -> bool:
    """Only ``active: false`` (or ``"false"``) marks a deactivated user; absent or null counts as active."""
    active = row.active
    return active is not False and not (isinstance(active, str) and active.strip().lower() == "false")


def _best_by_email(rows: Iterable[UserRow]) -> dict[str, tuple[str, bool]]:
    """E-mail -> (user id, active) of the user to use among ``rows``: the last active one listed,
    else the last inactive one (before, the last listed whatever its state). Rows without an id or
    an e-mail are skipped.
    """
    best: dict[str, tuple[str, bool]] = {}
    for row in rows:
        email = _email_of(row)
        if not email or not row.id:
            continue
        active = _is_active(row)
        if email not in best or active or not best[email][1]:
            best[email] = (row.id, active)
    return best
