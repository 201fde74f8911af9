"""The sweeper: queues again the records whose message was lost.

A record is ``pending`` while a message for it is queued, delayed or in hand. If that
message is gone (a write after an ack failed, a process died between two steps, a
dead letter whose bookkeeping failed), nothing would ever sync the record again. Every
``sweep_interval`` seconds the sweeper looks for records pending on an account that is not
paused, unchanged for ``sweep_after`` seconds and without a live lease, and publishes a
sync task for each. A record that did have a message is then synced twice, which the leases
and the "what is still missing" rule make harmless.

An account whose sync queue holds messages is left alone: its pending records are most likely
queued, not lost (a backlog draining at the rate limit after a long pause). Swept anyway, each
``sweep_after`` queued every record still waiting once more, and logged each as a lost message;
a record truly lost there is swept once the queue has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from lmsbridge.broker.codec import SyncTask
from lmsbridge.broker.connection import Broker
from lmsbridge.errors import BrokerUnavailable, InfrastructureFault
from lmsbridge.logs import get_logger
from lmsbridge.settings import BrokerSettings

log = get_logger(__name__)


class StaleRecords(Protocol):
    """The one query the sweeper needs (:meth:`lmsbridge.storage.Leases.stale_pending`)."""

    async def stale_pending(
        self, accounts: Sequence[str], *, unchanged_since: datetime, now: float, limit: int = 500
    ) -> list[tuple[int, str]]: ...


class Sweeper:
    """Finds pending records with no message and queues them again."""

    def __init__(
        self,
        leases: StaleRecords,
        broker: Broker,
        settings: BrokerSettings,
        *,
        accounts: Callable[[], Sequence[str]],
    ) -> None:
        self._leases = leases
        self._broker = broker
        self._after = settings.sweep_after
        self._interval = settings.sweep_interval
        self._accounts = accounts

    async def sweep(self) -> int:
        """One pass; returns how many stale records it looked at (those of accounts with messages
        queued left for the next pass, once ``sweep_after`` has passed again)."""
        now = time.time()
        unchanged_since = datetime.now(UTC) - timedelta(seconds=self._after)
        found = await self._leases.stale_pending(self._accounts(), unchanged_since=unchanged_since, now=now)
        if not found:
            return 0
        queued = await self._broker.queued_syncs({account for _, account in found})
        lost = [(record_id, account) for record_id, account in found if account not in queued]
        for record_id, account in lost:
            await self._broker.publish_sync(
                SyncTask(record_id, account), correlation_id=f"sweep-{record_id}", received_at=now
            )
        if lost:
            log.warning("sync.swept", records=len(lost))
        return len(found)

    async def run(self) -> None:
        """Sweep every ``sweep_interval`` seconds until cancelled; a failed pass is tried again next time."""
        while True:
            await asyncio.sleep(self._interval)
            with contextlib.suppress(InfrastructureFault, BrokerUnavailable):
                while await self.sweep() >= 500:  # a full page: there may be more
                    pass
