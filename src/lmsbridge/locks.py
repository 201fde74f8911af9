"""One asyncio lock per key, kept only while someone holds it or waits for it.

A plain ``dict.setdefault(key, asyncio.Lock())`` keeps a lock for every key ever seen: one
per learning object, for ever (40 events with 200 KB references kept 8 MB). Here each key
counts its users (the holder and the waiters); the last one out removes the key, so the
map holds only the keys in use right now.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["KeyedLocks"]


class KeyedLocks(Generic[K]):
    """Mutual exclusion per key; a key's lock exists only while it is held or awaited."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        """How many keys are held or awaited right now."""
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold ``key``'s lock for the ``async with`` block (waiting for any other holder first)."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:  # also when cancelled while waiting
            users[0] -= 1
            if users[0] == 0 and self._locks.get(key) is entry:
                del self._locks[key]
