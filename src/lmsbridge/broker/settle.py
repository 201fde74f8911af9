"""The outcome of a job, in one place: an :class:`~lmsbridge.broker.outcome.Action` carried out.

:meth:`Settler.settle` makes the action durable in the broker (a retry in a delay queue, a
dead letter, a paused account's task back in its queue), writes what the database must say
about the record, counts it and logs it, in this order:

| action | before the ack (raises: nothing acked)       | after the ack (best effort)        |
|--------|----------------------------------------------|------------------------------------|
| ack    |                                              |                                    |
| park   | ``parked`` + reason, unless synced           |                                    |
| retry  | publish to a delay queue (confirmed)         | note the failure on the record     |
| pause  | pause the account; publish its task again    | the reason, on a row still pending |
| dead   | publish to the dead-letter queue (confirmed) | ``dead`` + reason, unless synced   |

A dead record is recorded only once the broker holds its dead letter (marked dead first,
a dead letter that failed to publish would be dropped when its task came back). A paused
account's task is published again rather than returned, so pausing never counts towards
the queue's delivery limit. What is written after the ack may fail; the sweeper
(:mod:`lmsbridge.broker.sweeper`) queues any record left ``pending`` with no message again.
Nor may it undo another worker's work: a paused account's task published again may be taken
and written by another worker before this one's note, which then leaves the row synced.

A sync of an event's record that failed where the event was stored has no message of its
own: the same table applies, and the task is published fresh (there is nothing to ack).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from lmsbridge.broker.codec import Job
from lmsbridge.broker.connection import Broker
from lmsbridge.broker.outcome import Action
from lmsbridge.broker.topology import delay_level, jittered_level
from lmsbridge.domain.sync import DEAD, PARKED, PENDING
from lmsbridge.errors import InfrastructureFault
from lmsbridge.logs import get_logger
from lmsbridge.metrics import Metrics
from lmsbridge.ports import SyncStatusPort
from lmsbridge.service import describe
from lmsbridge.settings import BrokerSettings

log = get_logger(__name__)

_NOT_SYNCED = (PENDING, PARKED, DEAD)

Pause = Callable[[str, str, int | None], Awaitable[None]]
"""Pause an account's queue: (account, reason, StackOne status)."""
Ack = Callable[[AbstractIncomingMessage], Awaitable[None]]
"""Ack one message (:class:`lmsbridge.broker.acks.AckGroups` sends it with others)."""


class Settler:
    """Carries out the action decided for a job: broker, database, metrics and log."""

    def __init__(
        self,
        broker: Broker,
        rows: SyncStatusPort,
        settings: BrokerSettings,
        metrics: Metrics,
        *,
        pause: Pause,
        ack: Ack,
        rng: random.Random | None = None,
    ) -> None:
        self._ack = ack
        self._broker = broker
        self._rows = rows
        self._settings = settings
        self._metrics = metrics
        self._pause = pause
        self._rng = rng

    async def settle(
        self,
        job: Job,
        action: Action,
        exc: BaseException | None = None,
        *,
        message: AbstractIncomingMessage | None = None,
        duration: float = 0.0,
        stored: str | None = None,
    ) -> None:
        """Carry out ``action`` for ``job`` (and ack ``message``, when the job came in one).

        ``stored``: how an event was stored (``upserted``, ``duplicate``), counted once it is acked.
        Raises (BrokerUnavailable, InfrastructureFault, a connection error) when the outcome
        could not be made durable; nothing was acked (nor counted) then.
        """
        if exc is not None or action.kind != "ack":
            getattr(log, action.level)(f"{job.kind}.{action.stage}", duration=duration, **_described(action, exc))
        if job.sync is not None:
            await self._sync_before_ack(job, action)
        elif message is not None and action.kind != "ack":
            await self._event_before_ack(message, action)
        if message is not None:
            await self._ack(message)
        if job.sync is not None:
            await self._sync_after_ack(job, action)
        self._count(job, action, stored)

    def _level(self, action: Action) -> int:
        if action.at_least:
            return delay_level(self._settings, action.delay)
        return jittered_level(self._settings, action.delay, self._rng)

    async def _event_before_ack(self, message: AbstractIncomingMessage, action: Action) -> None:
        if action.kind == "dead":
            await self._broker.publish_dead(message, reason=action.reason, error=action.error)
        else:  # retry (an event is never parked nor paused: its records are)
            level = self._level(action)
            await self._broker.publish_retry(
                message, attempt=action.attempt, level=level, failing_since=action.failing_since
            )

    async def _sync_before_ack(self, job: Job, action: Action) -> None:
        sync = job.sync
        assert sync is not None
        cid, received = job.correlation_id, job.received_at
        if action.kind == "park":
            await self._rows.set_status(
                sync.record_id, sync.account, PARKED, reason=action.reason, error=action.error, only_from=_NOT_SYNCED
            )
        elif action.kind == "retry":
            await self._broker.publish_sync(
                sync,
                correlation_id=cid,
                received_at=received,
                attempt=action.attempt,
                delay_level=self._level(action),
                failing_since=action.failing_since,
                background=job.background,
                tries=job.tries + 1,
            )
        elif action.kind == "pause":
            # Stop the account's deliveries first, so the task published again waits for the probe.
            await self._pause(sync.account, action.error or action.reason, _status(action.reason))
            await self._broker.publish_sync(
                sync,
                correlation_id=cid,
                received_at=received,
                attempt=action.attempt,
                background=job.background,
                tries=job.tries + 1,
            )
        elif action.kind == "dead":
            await self._broker.publish_dead_sync(
                sync,
                correlation_id=cid,
                received_at=received,
                attempt=action.attempt,
                reason=action.reason,
                error=action.error,
                tries=job.tries + 1,
            )

    async def _sync_after_ack(self, job: Job, action: Action) -> None:
        sync = job.sync
        assert sync is not None
        rid, account = sync.record_id, sync.account
        # Another worker may have taken the task queued again and synced the record since the ack:
        # what is noted here never undoes that (a row set pending again had no message left).
        with contextlib.suppress(InfrastructureFault):
            if action.kind == "dead":
                await self._rows.set_status(
                    rid, account, DEAD, reason=action.reason, error=action.error, only_from=_NOT_SYNCED
                )
            elif action.kind == "pause":
                await self._rows.set_status(
                    rid, account, PENDING, reason=action.reason, error=action.error, only_from=(PENDING,)
                )
            elif action.kind == "retry" and action.transient:
                await self._rows.note_failure(rid, account, action.error)

    def _count(self, job: Job, action: Action, stored: str | None) -> None:
        count = self._metrics.record if job.kind == "sync" else self._metrics.stage
        if action.kind != "ack":
            count(action.stage)
        elif stored is not None:  # an event settles once, when acked: its delivery ledger's one entry
            self._metrics.stage(stored)
        if action.kind == "dead":
            log.error("message.dead_lettered", reason=action.reason, error=action.error)


def _described(action: Action, exc: BaseException | None) -> dict[str, Any]:
    fields: dict[str, Any] = describe(exc) if exc is not None else {"error": action.error}
    fields.setdefault("reason", action.reason)
    return fields


def _status(reason: str) -> int | None:
    """The StackOne status a pause reason names (``stackone_403``), if any."""
    prefix, _, number = reason.partition("_")
    return int(number) if prefix == "stackone" and number.isdigit() else None
