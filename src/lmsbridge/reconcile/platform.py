"""One source's platform pass: read the truth batch by batch, compare, queue what drifted.

Reads down in this order, per batch (one Exec page, one limeplate assignment):

1. read it from the platform (:mod:`.exec_source`, :mod:`.limeplate_source`): a batch is
   validated whole, so a malformed one is used not at all;
2. read the local records of every person in it (:class:`~lmsbridge.storage.reconcile.ReconcileStore`);
3. keep the people whose observation would change their record (:func:`.findings.drift`);
4. unless it is a dry run, publish them to the source's intake queue as the canonical event a
   webhook would have been, with a deterministic message id (:func:`.findings.message_id`),
   confirmed (each counted ``requeued`` in the delivery ledger as it is: an input beside the
   receivers' ``accepted``), paced to ``reconcile.budget_share`` of the StackOne budget and only while
   the intake queue is nearly empty (:mod:`.backpressure`: live webhooks first). The worker then
   does what it does for any webhook: inbox, merge, leases, rate limit, LMS writes, in the
   background lane (:mod:`lmsbridge.lanes`): at the StackOne budget every live request waiting
   goes first.

A failure stops the source where it got to; what was queued before stays queued.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from lmsbridge.domain import AssignmentEvent, PersonProgress
from lmsbridge.errors import BrokerUnavailable, InfrastructureFault, MalformedPage, PlatformUnavailable
from lmsbridge.reconcile.batches import Batch
from lmsbridge.reconcile.client import PlatformClient
from lmsbridge.reconcile.exec_source import exec_batches
from lmsbridge.reconcile.findings import SourceReport, drift, message_id, observed
from lmsbridge.reconcile.limeplate_source import limeplate_batches
from lmsbridge.settings import SourceSettings
from lmsbridge.stackone.ratelimit import RateLimiter
from lmsbridge.storage.reconcile import ReconcileStore

CHUNK = 200  # people per queued event: a big org's drift is several messages, not one huge one
PUBLISH_TIMEOUT = 10.0

Progress = Callable[[str, int, int | None], None]
"""Called with (source, assignments read so far, assignments in all when known)."""
Skipped = Callable[[str, int], None]
"""Called with (source, member rows skipped as unusable): :meth:`lmsbridge.metrics.Metrics.members_skipped`."""
Queued = Callable[[int], None]
"""Called with how many events a publish put in an intake queue, once confirmed: the ledger's ``requeued``."""


class Backpressure(Protocol):
    """Holds a pass back while live traffic has a queue (:class:`.backpressure.IntakeBackpressure`)."""

    async def wait(self, source: str) -> None: ...


class EventPublisher(Protocol):
    """Where drift goes: the broker's confirmed publish to the source's intake queue."""

    async def publish_event(self, event: AssignmentEvent, *, timeout: float, background: bool = False) -> None: ...


@dataclass
class PlatformPass:
    """Reconciles sources against their platforms; ``publisher=None`` is a dry run."""

    store: ReconcileStore
    publisher: EventPublisher | None
    accounts_of: dict[str, list[str]]
    pacer: RateLimiter | None = None
    backpressure: Backpressure | None = None
    progress: Progress | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    members_skipped: Skipped | None = None
    queued: Queued | None = None

    async def run(
        self, source: str, settings: SourceSettings, client: PlatformClient, correlation_id: str
    ) -> SourceReport:
        """One pass over ``source``; never raises for the platform's or the broker's failures."""
        report = SourceReport(source, settings.platform)
        started = time.monotonic()
        where = "before the first batch"
        batches: AsyncIterator[Batch]
        if settings.platform == "exec":
            batches = exec_batches(client, source, correlation_id=correlation_id, now=self.clock)
        else:
            skipped = functools.partial(self.members_skipped, source) if self.members_skipped else None
            batches = limeplate_batches(
                client, self.store, source, correlation_id=correlation_id, now=self.clock, on_skipped=skipped
            )
        try:
            async for batch in batches:
                where = f"after {batch.where}"
                await self._apply(report, batch)
                if self.progress is not None:
                    self.progress(source, report.assignments_read, batch.total)
            report.finished = True
        except (PlatformUnavailable, BrokerUnavailable, InfrastructureFault) as exc:
            report.error = f"{exc} [field {exc.field}]" if isinstance(exc, MalformedPage) else str(exc)
            report.stopped_at = where
        finally:
            report.platform_calls = client.calls
            report.retries = client.retries
            report.duration = time.monotonic() - started
        return report

    async def _apply(self, report: SourceReport, batch: Batch) -> None:
        report.assignments_read += batch.assignments
        report.in_step += batch.in_step
        report.skipped_inactive += batch.skipped_inactive
        report.detail_calls += int(batch.detail)
        if report.platform == "exec":
            report.pages += 1
        keys = [(e.learning_object.external_reference, p.person_key) for e in batch.events for p in e.people]
        local = await self.store.states(report.source, keys)
        queued: list[AssignmentEvent] = []
        for event in batch.events:
            ref = event.learning_object.external_reference
            drifted: list[PersonProgress] = []
            for person in event.people:
                report.records_read += 1
                kind = drift(local.get((ref, person.person_key)), observed(event, person))
                if kind is None:
                    report.in_step += 1
                else:
                    report.drift[kind] += 1
                    drifted.append(person)
            for start in range(0, len(drifted), CHUNK):
                chunk = drifted[start : start + CHUNK]
                mid = message_id(report.source, event.assignment_id, chunk)
                queued.append(event.model_copy(update={"message_id": mid, "people": tuple(chunk)}))
        if self.publisher is None:
            return
        await self._publish(report, queued)
        if batch.snapshot is not None:
            assignment, total, completed = batch.snapshot
            await self.store.remember_seen(report.source, assignment, total, completed, time.time())

    async def _publish(self, report: SourceReport, events: list[AssignmentEvent]) -> None:
        """Publish confirmed, each after its share of the reconcile budget; all of a batch in flight at once."""
        assert self.publisher is not None
        publisher = self.publisher
        if events and self.backpressure is not None:
            await self.backpressure.wait(report.source)
        accounts = max(1, len(self.accounts_of.get(report.source, [])))

        async def one(event: AssignmentEvent) -> None:
            if self.pacer is not None:
                for _ in range(len(event.people) * accounts):
                    await self.pacer.acquire(report.source)
            await publisher.publish_event(event, timeout=PUBLISH_TIMEOUT, background=True)
            if self.queued is not None:  # counted as it is confirmed: a worker may settle it at once
                self.queued(1)

        results = await asyncio.gather(*(one(e) for e in events), return_exceptions=True)
        report.events_queued += sum(1 for r in results if r is None)
        for result in results:
            if isinstance(result, BaseException):
                raise result
