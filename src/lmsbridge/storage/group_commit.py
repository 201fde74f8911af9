"""Group commit: the small write transactions of many concurrent callers, run as one.

Every sync and every event makes a few tiny writes (take a lease, note an intent, mark a
step written). Alone, each pays a whole transaction: ``BEGIN IMMEDIATE``, a commit with its
fsync, a hop to the database thread. :class:`GroupCommit` queues those writes and runs
whatever is queued in ONE transaction; each caller gets its own result only after the
commit, so "acked after the commit" still holds. Under load the batches grow by themselves
(everything that queued while the previous batch ran); alone, a write waits for nobody.

If PostgreSQL rolls the shared transaction back to break a deadlock with another worker's
batch (or a serialization failure), the batch runs again at once, up to three times: nothing
of it was kept, and the tie is gone. If the shared transaction fails because the database
failed (connection lost, locked),
every write in it fails with the same error and none is kept: callers see the same
:class:`~sqlalchemy.exc.SQLAlchemyError` they would have seen alone, and retry. If it fails
because one write's own data was refused (:func:`~lmsbridge.storage.database.is_data_error`,
or an exception that is not the database's), nothing of the batch was kept either, and each
write is run again in a transaction of its own: the culprit fails alone, with its own error,
and the others commit. A write whose caller was cancelled before its batch started is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from lmsbridge.storage.database import Database, is_conflict, is_data_error

T = TypeVar("T")
_CONFLICT_RETRIES = 3

__all__ = ["GroupCommit"]


class GroupCommit:
    """Runs queued write functions together, one transaction per batch, one batch at a time."""

    def __init__(self, database: Database, *, max_batch: int = 256) -> None:
        self._database = database
        self._max_batch = max_batch
        self._queue: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # transactions committed (for benchmarks and tests)
        self.conflicts = 0  # batches run again after losing a deadlock

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` inside the next shared transaction; its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        self._wakeup.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever(), name="lmsbridge-group-commit")
        return await future

    async def _write_forever(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            batch = [(work, future) for work, future in batch if not future.done()]
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._write_through_conflicts([work for work, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:  # the whole transaction is gone
            if len(batch) > 1 and _one_writes_fault(exc):
                await self._one_by_one(batch)
                return
            for _, future in batch:  # the database failed: every caller sees why
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _write_through_conflicts(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """Write ``works`` in one transaction, again (after a few random milliseconds) when it lost a deadlock."""
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                return await self._database.write(works)
            except SQLAlchemyError as exc:
                if attempt == _CONFLICT_RETRIES or not is_conflict(exc):
                    raise
                self.conflicts += 1
                await asyncio.sleep(random.uniform(0.001, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    async def _one_by_one(self, batch: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]]) -> None:
        """Run each write of a failed batch in its own transaction, so only the culprit fails."""
        for index, (work, future) in enumerate(batch):
            if future.done():
                continue
            try:
                [result] = await self._database.write([work])
            except asyncio.CancelledError:
                for _, waiting in batch[index:]:
                    waiting.cancel()
                raise
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            self.batches += 1
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Stop the writer (callers still waiting are cancelled)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()


def _one_writes_fault(exc: Exception) -> bool:
    """Whether a batch failed for one write's data (or code), not because the database failed."""
    if isinstance(exc, SQLAlchemyError):
        return is_data_error(exc)
    return not isinstance(exc, OSError)
