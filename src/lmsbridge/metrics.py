"""Prometheus metrics, on a registry of their own so every app (and test) can have a fresh set.

Labels never carry secrets: signature matches are labelled by key *name* or position.
The delivery ledger is ``lmsbridge_events_total{stage=...}``: every event put in an intake queue
(``accepted`` from a webhook, or ``requeued`` by a reconcile pass or a dead-letter replay) is
upserted, a duplicate, dead-lettered, or still in flight (in a queue or a worker's hands):
``lmsbridge_ledger_in_flight`` = accepted + requeued - upserted - duplicate - dead_lettered. An event is
counted in one of those three once, when its message is acked or dead-lettered, however often
it was delivered: a delivery that stored it and then failed (a retry, a worker stopped or lost)
counts nothing, and the redelivery that settles it finds it stored (``duplicate``). Likewise
``consumed`` counts an event's first delivery and ``redelivered`` every later one. Sync work
per (record, account) is counted apart in ``lmsbridge_records_total{stage=...}``.

The metrics counted for every event keep their labelled children once made: ``labels()`` takes
a lock and builds a key on each call (~5 us of the ~800 us a worker spends on an event, issue 15).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

EVENT_STAGES = (
    "received",  # a request reached the webhook route
    "rejected",  # refused with a 4xx/503
    "ignored",  # a type lmsbridge does not handle: 202, not queued
    "deduplicated",  # a platform's retry of a message this receiver just queued: 202, not queued again
    "accepted",  # confirmed in RabbitMQ, answered 202
    "requeued",  # confirmed in an intake queue by a reconcile pass or a dead-letter replay (no webhook)
    "consumed",  # taken by a worker, first delivery
    "redelivered",  # taken again: a retry back from its delay queue, RabbitMQ's redelivery, a replay
    "upserted",  # acked, stored for the first time by the delivery that settled it
    "duplicate",  # acked, already in the inbox when that delivery stored it: no second effect
    "retried",  # sent to a delay queue (e.g. the platform API failed during expansion)
    "dead_lettered",  # in the dead-letter queue
)
RECORD_STAGES = ("pushed", "retried", "parked", "dead_lettered", "paused")


class _Children(dict[Hashable, Any]):
    """Labelled children by key, each made once by ``make(key)`` on first use."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: Hashable) -> Any:
        child = self[key] = self._make(key)
        return child


_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric lmsbridge exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("lmsbridge_events", "Webhook events by pipeline stage", ["stage"], registry=r)
        self.records = Counter("lmsbridge_records", "Sync of (record, account) pairs by stage", ["stage"], registry=r)
        self.in_flight = Gauge(
            "lmsbridge_ledger_in_flight",
            "Accepted and requeued events not yet upserted, duplicate or dead-lettered",
            registry=r,
        )
        self.in_flight.set_function(self._in_flight)
        self.rejections = Counter(
            "lmsbridge_rejections", "Refused webhooks by source and code", ["source", "code"], registry=r
        )
        self.signature_matches = Counter(
            "lmsbridge_signature_matches",
            "Accepted signatures by source and key name",
            ["source", "key"],
            registry=r,
        )
        self.stackone_responses = Counter(
            "lmsbridge_stackone_responses",
            "StackOne responses by operation and status",
            ["operation", "status"],
            registry=r,
        )
        self.receive_seconds = Histogram(
            "lmsbridge_receive_seconds", "Webhook request handling time", buckets=_LATENCY, registry=r
        )
        self.stackone_seconds = Histogram(
            "lmsbridge_stackone_seconds", "StackOne call latency", ["operation"], buckets=_LATENCY, registry=r
        )
        self.budget_wait_seconds = Histogram(
            "lmsbridge_rate_budget_wait_seconds",
            "Time a StackOne request waited for a slot of the key's budget, by lane (live, background)",
            ["lane"],
            buckets=_LATENCY,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "lmsbridge_end_to_end_seconds", "Webhook received to LMS written", buckets=_LATENCY, registry=r
        )
        self.queue_depth = Gauge("lmsbridge_queue_depth", "Messages ready in each queue", ["queue"], registry=r)
        self.queue_depth_read = Gauge(
            "lmsbridge_queue_depth_last_success_timestamp_seconds",
            "When this worker last read every queue's depth (0: never); a failed read withdraws the depths",
            registry=r,
        )
        self.rate_waiting = Gauge(
            "lmsbridge_rate_budget_waiting",
            "StackOne requests of this process waiting for a slot of the key's shared budget",
            registry=r,
        )
        self.rate_granted = Gauge(
            "lmsbridge_rate_budget_granted",
            "StackOne requests this process was given a slot for (sum over processes = the key's use)",
            registry=r,
        )
        self.paused_accounts = Gauge("lmsbridge_paused_accounts", "StackOne accounts paused", registry=r)
        self.ledger_written = Gauge(
            "lmsbridge_ledger_last_success_timestamp_seconds",
            "When this process last wrote its event counters for status's ledger (0: never)",
            registry=r,
        )
        self.database_paused = Gauge(
            "lmsbridge_database_paused", "1 while this worker consumes nothing because its database fails", registry=r
        )
        self.member_rows_skipped = Counter(
            "lmsbridge_member_rows_skipped",
            "Member rows of a team or org assignment skipped as unusable (no e-mail, ...), by source",
            ["source"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "lmsbridge_reconcile_runs", "Reconcile passes by source and outcome", ["source", "outcome"], registry=r
        )
        self.reconcile_drift = Counter(
            "lmsbridge_reconcile_drift",
            "Drift found by reconcile passes, by source and kind",
            ["source", "kind"],
            registry=r,
        )
        self.reconcile_last_success = Gauge(
            "lmsbridge_reconcile_last_success_timestamp_seconds",
            "When the last reconcile pass of a source finished",
            ["source"],
            registry=r,
        )
        self.reconcile_calls = Gauge(
            "lmsbridge_reconcile_calls_per_pass",
            "API calls the last reconcile pass of a source made",
            ["source"],
            registry=r,
        )
        self._stages = _Children(lambda stage: self.events.labels(stage=stage))
        self._record_stages = _Children(lambda stage: self.records.labels(stage=stage))
        for stage in EVENT_STAGES:  # every stage exported from the start, at 0
            self._stages[stage]
        for stage in RECORD_STAGES:
            self._record_stages[stage]
        self._matches = _Children(lambda k: self.signature_matches.labels(source=k[0], key=k[1]))
        self._responses = _Children(
            lambda k: (
                self.stackone_responses.labels(operation=k[0], status=str(k[1])),
                self.stackone_seconds.labels(operation=k[0]),
            )
        )

    def stage(self, stage: str, n: int = 1) -> None:
        """Count ``n`` events reaching ``stage``."""
        self._stages[stage].inc(n)

    def record(self, stage: str, n: int = 1) -> None:
        """Count ``n`` (record, account) syncs reaching ``stage``."""
        self._record_stages[stage].inc(n)

    def signature_matched(self, source: str, key: str) -> None:
        """Count one accepted signature of ``source`` by the key (name or position) that matched it."""
        self._matches[(source, key)].inc()

    def stackone_response(self, operation: str, status: int, seconds: float) -> None:
        """Count one StackOne answer (``status`` 0: none came) and observe how long it took."""
        counter, latency = self._responses[(operation, status)]
        counter.inc()
        latency.observe(seconds)

    def members_skipped(self, source: str, rows: int) -> None:
        """Count ``rows`` member rows of ``source``'s platform skipped as unusable."""
        self.member_rows_skipped.labels(source=source).inc(rows)

    def count(self, stage: str) -> float:
        """The current count of events at ``stage``."""
        return float(self.registry.get_sample_value("lmsbridge_events_total", {"stage": stage}) or 0.0)

    def _in_flight(self) -> float:
        settled = self.count("upserted") + self.count("duplicate") + self.count("dead_lettered")
        return max(0.0, self.count("accepted") + self.count("requeued") - settled)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
