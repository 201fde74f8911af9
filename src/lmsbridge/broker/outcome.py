"""The one place that maps what a handler raised to what happens to the message (pure: no I/O).

| raised                      | action | attempt used | delay                                           |
|-----------------------------|--------|--------------|-------------------------------------------------|
| nothing                     | ack    |              |                                                 |
| ParkRecord                  | park   |              | the record waits in the database (parked)       |
| RetryAfter / WriteUncertain | retry  | yes          | at least what StackOne (or the lease) asks      |
|   (a 3xx on a create too)   |        |              | listed before writing again; never "written"    |
| RetryLater                  | retry  | yes          | exponential backoff with full jitter            |
| LeaseBusy                   | retry  | no           | ``backoff_base``: another worker holds it       |
| InfrastructureFault         | retry  | no           | full jitter: our database or broker failed      |
| BrokerUnavailable           | retry  | no           | the same (a sync settled inline whose retry     |
|                             |        |              | RabbitMQ did not confirm, raised by its event)  |
| PauseAccount                | pause  | no           | the message waits in its paused account's queue |
| DeadLetter                  | dead   |              | at once: a permanent refusal (400/422/404 ...)  |
| DeadLetter("unstorable")    | dead   |              | the database refused the message's own data     |
| DeadLetter("stackone_3xx")  | dead   |              | a redirect on a read (never followed)           |
| anything else (a bug)       | retry  | yes          | then dead-lettered as ``internal_error``        |

Transient failures are dead-lettered by age, not by count: once a record has been failing
for longer than ``max_retry_age`` (from its first failure in a row, carried on the message),
the retry becomes a dead letter with reason ``retry_age_exceeded``. A bug is dead-lettered
after ``max_attempts``. What the action then does (publish, ack, database, metrics, log)
happens in :mod:`lmsbridge.broker.settle`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from lmsbridge.errors import (
    BrokerUnavailable,
    DeadLetter,
    InfrastructureFault,
    LeaseBusy,
    ParkRecord,
    PauseAccount,
    RetryAfter,
    RetryLater,
)
from lmsbridge.settings import BrokerSettings

ActionKind = Literal["ack", "park", "retry", "pause", "dead"]

STAGES: dict[ActionKind, str] = {
    "ack": "done",
    "park": "parked",
    "retry": "retried",
    "pause": "paused",
    "dead": "dead_lettered",
}
"""The metric stage and log event suffix of each action."""


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a message after its handler ran."""

    kind: ActionKind
    attempt: int = 0  # the attempt number the retried message carries
    delay: float = 0.0
    at_least: bool = False  # the delay is a minimum (Retry-After, a lease): never shortened
    reason: str = ""
    error: str = ""
    failing_since: float | None = None  # carried on a retried message: the first failure in a row
    transient: bool = False  # a failure outside lmsbridge, noted on the record (attempts, last error)

    @property
    def stage(self) -> str:
        """The metric stage and log event suffix (``sync.retried``)."""
        return STAGES[self.kind]

    @property
    def level(self) -> str:
        """The log level of a failure: routine retries are quieter than dead letters and pauses."""
        if self.kind in ("dead", "pause"):
            return "error"
        return "debug" if self.reason in ("lease_busy", "") else "warning"


@dataclass(frozen=True, slots=True)
class Policy:
    """The retry rules from the settings."""

    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    max_retry_age: float = 86400.0
    max_attempts: int = 8

    @classmethod
    def of(cls, settings: BrokerSettings) -> Policy:
        """The policy the broker settings configure."""
        return cls(settings.backoff_base, settings.backoff_cap, settings.max_retry_age, settings.max_attempts)


def full_jitter(used: int, policy: Policy, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(used-1))]."""
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** min(max(used - 1, 0), 60))
    return (rng or random).uniform(0.0, ceiling)


def decide(
    exc: BaseException | None,
    *,
    attempt: int,
    failing_since: float | None,
    now: float,
    policy: Policy,
    rng: random.Random | None = None,
) -> Action:
    """Map a handler's outcome to an :class:`Action`.

    ``attempt`` is the message's attempts so far, ``failing_since`` the time of its first
    transient failure in a row (None when it was not failing), ``now`` the current time.
    """
    if exc is None:
        return Action("ack")
    if isinstance(exc, ParkRecord):
        return Action("park", reason=exc.reason, error=str(exc))
    if isinstance(exc, DeadLetter):
        return Action("dead", reason=exc.reason, error=str(exc))
    if isinstance(exc, PauseAccount):
        return Action("pause", attempt=attempt, reason=f"stackone_{exc.status}", error=str(exc))
    if isinstance(exc, LeaseBusy):
        delay = policy.backoff_base
        return Action("retry", attempt=attempt, delay=delay, reason="lease_busy", failing_since=failing_since)
    if isinstance(exc, (InfrastructureFault, BrokerUnavailable)):
        delay = full_jitter(1, policy, rng)
        return Action(
            "retry", attempt=attempt, delay=delay, reason="infrastructure", error=str(exc), failing_since=failing_since
        )
    used = attempt + 1
    if isinstance(exc, RetryLater):
        since = failing_since if failing_since is not None else now
        if now - since > policy.max_retry_age:
            return Action("dead", reason="retry_age_exceeded", error=str(exc), transient=True)
        asked = isinstance(exc, RetryAfter)
        delay = max(0.0, exc.delay) if isinstance(exc, RetryAfter) else full_jitter(used, policy, rng)
        return Action(
            "retry",
            attempt=used,
            delay=delay,
            at_least=asked,
            reason="transient",
            error=str(exc),
            failing_since=since,
            transient=True,
        )
    error = f"{type(exc).__name__}: {exc}"
    if used >= policy.max_attempts:
        return Action("dead", reason="internal_error", error=error)
    return Action("retry", attempt=used, delay=full_jitter(used, policy, rng), reason="internal_error", error=error)
