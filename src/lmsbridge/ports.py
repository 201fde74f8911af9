"""The seams between the core and its edges: Protocols and the plain data that crosses them.

:mod:`lmsbridge.service` depends on these only; storage, StackOne, vendor APIs and the
broker implement them.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from lmsbridge.domain import AccountSync, AssignmentEvent, Completion, PersonProgress, RecordKey, RecordState
from lmsbridge.domain.sync import SyncStep

ContentItem = tuple[str, str, datetime | None]
"""A learning object to upsert: (external reference, title, time of the event that carried the title)."""

BeforeSend = Callable[[], Awaitable[None]]
"""Called after the rate limiter granted a create and just before it is sent; may raise to stop it."""


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "unset"


UNSET: Final = Unset.UNSET
"""A keyword argument not given: the field keeps its value (None is a value: it clears the field)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A sync lease to take while storing: its holder, and until when (epoch seconds).

    ``intent``: the step the rows of new records are stored intending, as :meth:`LeasePort.intend`
    would note it: the write-ahead intent of the create their holder sends first, in the same
    transaction (one write fewer for each new record). ``at``: when it is taken; the free rows of
    records that existed (no lease, or one that ended before then, and not dead) are claimed with
    it too, as :meth:`LeasePort.claim` would (one write fewer for each of their events), and
    ``intent_of`` the view read names the intent noted on each that has none (its first create).
    """

    owner: str
    until: float
    intent: SyncStep | None = None
    at: float = 0.0
    intent_of: Callable[[SyncView], SyncStep | None] | None = None


@dataclass(frozen=True, slots=True)
class Ingest:
    """Result of storing one event: whether it was a duplicate, and the records it touches.

    ``claimed``: the sync rows of records the event created, leased to the ingest's
    :class:`Lease` in the same transaction (so their sync needs no claim of its own), stored
    with its intent. ``taken``: the rows of records that existed it could lease too, each as a
    claim reads it (before anything is noted), with the intent noted on it then, if any.
    """

    duplicate: bool
    record_ids: tuple[int, ...]
    claimed: tuple[SyncView, ...] = ()
    taken: tuple[tuple[SyncView, SyncStep | None], ...] = ()


@dataclass(frozen=True, slots=True)
class SyncView:
    """One record as one account should see it, with what is already written there."""

    record_id: int
    account: str
    key: RecordKey
    state: RecordState
    synced: AccountSync
    status: str
    attempts: int
    uncertain_step: str | None
    leased: bool = False  # the lease on it is ours (see LeasePort.claim)
    version: int = 1  # the record's version this view was read at (a write marks it synced only if unchanged)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Per-account bookkeeping: pause state and user-directory freshness."""

    account: str
    paused: bool = False
    reason: str | None = None
    directory_refreshed_at: datetime | None = None
    email_filter: str = "unknown"  # unknown | honoured | ignored


class UserRow(Protocol):
    """A StackOne LMS user as listed."""

    @property
    def id(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...
    @property
    def active(self) -> bool | str | None: ...


class IntakePort(Protocol):
    """Storing events: the inbox and the merged records (:class:`lmsbridge.storage.Intake`)."""

    async def ingest(
        self,
        items: Sequence[tuple[AssignmentEvent, Sequence[PersonProgress]]],
        accounts_of: dict[str, list[str]],
        *,
        lease: Lease | None = None,
    ) -> list[Ingest]: ...


class SyncStatusPort(Protocol):
    """Settling a sync row after its outcome: its status, its failed attempts (the consumer's settler)."""

    async def set_status(
        self,
        record_id: int,
        account: str,
        status: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        only_from: Collection[str] | None = None,
    ) -> None: ...
    async def note_failure(self, record_id: int, account: str, error: str) -> int: ...


class LeasePort(SyncStatusPort, Protocol):
    """A record's sync on one account: its lease, write-ahead intents, steps written
    (:class:`lmsbridge.storage.Leases`)."""

    async def load_sync(self, record_id: int, account: str) -> SyncView | None: ...
    async def claim(
        self, record_id: int, account: str, owner: str, now: float, lease: float, *, revive: bool = False
    ) -> SyncView | None: ...
    async def release(
        self,
        record_id: int,
        account: str,
        owner: str,
        *,
        synced: bool = False,
        version: int | None = None,
        clear_intent: bool = False,
    ) -> bool: ...
    async def mark_written(
        self,
        record_id: int,
        account: str,
        step: SyncStep,
        lms_id: str | None,
        *,
        last: bool = False,
        completion: Completion | None = None,
        version: int | None = None,
    ) -> bool: ...
    async def intend(
        self, record_id: int, account: str, owner: str, step: SyncStep | None, now: float, lease: float
    ) -> bool: ...
    async def parked(self, account: str, reason: str) -> list[int]: ...
    async def stale_pending(
        self, accounts: Sequence[str], *, unchanged_since: datetime, now: float, limit: int = 500
    ) -> list[tuple[int, str]]: ...


class ContentPort(Protocol):
    """Which learning objects (and titles) each account has (:class:`lmsbridge.storage.Content`)."""

    async def missing_content(self, account: str, items: Iterable[ContentItem]) -> list[ContentItem]: ...
    async def mark_content(self, account: str, items: Sequence[ContentItem]) -> None: ...


class DirectoryPort(Protocol):
    """Each account's users by e-mail (:class:`lmsbridge.storage.Directory`)."""

    async def user_id(self, account: str, email: str) -> str | None: ...
    async def save_users(self, account: str, users: Iterable[tuple[str, str]]) -> int: ...
    async def forget_user(self, account: str, email: str, user_id: str) -> None: ...


class AccountPort(Protocol):
    """Per-account bookkeeping (:class:`lmsbridge.storage.Accounts`)."""

    async def account(self, account: str) -> AccountState: ...
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
    ) -> None: ...


class StackOnePort(Protocol):
    """The StackOne LMS calls the service makes (implemented by :class:`lmsbridge.stackone.StackOneClient`)."""

    async def upsert_content_batch(self, account: str, items: list[dict[str, Any]]) -> list[list[str]]: ...
    async def create_assignment(
        self, account: str, user_id: str, body: dict[str, Any], *, before_send: BeforeSend | None = None
    ) -> str | None: ...
    async def create_completion(
        self, account: str, user_id: str, body: dict[str, Any], *, before_send: BeforeSend | None = None
    ) -> str | None: ...
    async def delete_completion(self, account: str, user_id: str, completion_id: str) -> None: ...
    async def list_user_assignments(self, account: str, user_id: str) -> list[dict[str, Any]]: ...
    async def list_user_completions(self, account: str, user_id: str) -> list[dict[str, Any]]: ...
    async def find_users_by_email(self, account: str, email: str) -> Sequence[UserRow]: ...
    def iter_users(
        self, account: str, *, updated_after: datetime | None = None
    ) -> AsyncIterator[Sequence[UserRow]]: ...
    async def probe(self, account: str) -> None: ...


class PlatformPort(Protocol):
    """A training platform's API, for expanding team and org assignments into people."""

    async def members(self, assignment_id: str) -> list[PersonProgress]: ...


class SyncQueuePort(Protocol):
    """Where the service queues per-account sync work (implemented by the broker)."""

    async def queue_sync(self, record_id: int, account: str, *, correlation_id: str, received_at: float) -> None: ...
