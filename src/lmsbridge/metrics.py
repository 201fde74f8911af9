"""Prometheus metrics, on a registry of their own so every app (and test) can have a fresh set.

Labels never carry secrets: signature matches are labelled by key *name* or position.
The delivery ledger is ``events_total{stage=...}``: accepted = upserted + dead_lettered +
in flight, where in flight is what the queues still hold.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = (
    "received",
    "rejected",
    "ignored",
    "accepted",
    "consumed",
    "duplicate",
    "upserted",
    "pushed",
    "retried",
    "parked",
    "dead_lettered",
)

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric lmsbridge exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("lmsbridge_events", "Events and records by pipeline stage", ["stage"], registry=r)
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
        self.lag_seconds = Histogram(
            "lmsbridge_end_to_end_seconds", "Webhook received to LMS written", buckets=_LATENCY, registry=r
        )
        self.queue_depth = Gauge("lmsbridge_queue_depth", "Messages ready in each queue", ["queue"], registry=r)
        self.rate_tokens = Gauge("lmsbridge_rate_budget_tokens", "Tokens left in the StackOne rate budget", registry=r)
        self.rate_granted = Gauge(
            "lmsbridge_rate_budget_granted", "StackOne requests granted by the rate limiter", registry=r
        )
        self.paused_accounts = Gauge("lmsbridge_paused_accounts", "StackOne accounts paused", registry=r)
        for stage in STAGES:
            self.events.labels(stage=stage)

    def stage(self, stage: str, n: int = 1) -> None:
        """Count ``n`` events or records reaching ``stage``."""
        self.events.labels(stage=stage).inc(n)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
