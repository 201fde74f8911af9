"""Fakes for the service's seams that are not worth a real server in unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CollectingSyncQueue:
    """A :class:`~lmsbridge.ports.SyncQueuePort` that keeps the sync tasks it is given, in order."""

    tasks: list[tuple[int, str]] = field(default_factory=list)

    async def queue_sync(self, record_id: int, account: str, *, correlation_id: str, received_at: float) -> None:
        """Remember the task."""
        self.tasks.append((record_id, account))

    def take(self) -> list[tuple[int, str]]:
        """Every task queued so far; the queue is empty afterwards."""
        tasks, self.tasks = self.tasks, []
        return tasks
