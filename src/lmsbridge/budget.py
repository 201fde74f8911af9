"""Wiring: this process's door to the StackOne key's budget shared through the database."""

from __future__ import annotations

import os
import socket
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.settings import Settings
from lmsbridge.stackone.shared_budget import SharedRateLimiter
from lmsbridge.storage.budget import BudgetStore, key_id

__all__ = ["SharedBudget", "open_shared_budget"]


class SharedBudget:
    """A :class:`SharedRateLimiter` and the store it claims from, closed together."""

    def __init__(self, limiter: SharedRateLimiter, store: BudgetStore) -> None:
        self.limiter = limiter
        self.store = store

    async def close(self) -> None:
        """Stop claiming, then release the store's connection."""
        await self.limiter.close()
        await self.store.close()


def holder_name(role: str) -> str:
    """``host:pid:role:random``: unique per process start, readable in ``lmsbridge status``."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{role}:{uuid.uuid4().hex[:6]}"


def open_shared_budget(settings: Settings, engine: AsyncEngine, *, role: str) -> SharedBudget:
    """The budget of ``stackone.api_key`` at ``stackone.base_url``, drawn on by this process as ``role``."""
    s = settings.stackone
    store = BudgetStore(engine)
    limiter = SharedRateLimiter(
        store,
        key_id(s.base_url, s.api_key.get_secret_value()),
        s.rate_limit_per_minute,
        holder=holder_name(role),
        max_pause=s.max_pause_seconds,
    )
    return SharedBudget(limiter, store)
