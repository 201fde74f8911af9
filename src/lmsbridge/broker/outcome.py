"""The one place that maps what a handler raised to what happens to the message.

| raised                      | action   | attempt used | notes                                      |
|-----------------------------|----------|--------------|--------------------------------------------|
| nothing                     | ack      |              |                                            |
| ParkRecord                  | ack      |              | the record waits in the database (parked)  |
| RetryAfter / WriteUncertain | retry    | yes          | delay = Retry-After                        |
| RetryLater                  | retry    | yes          | exponential backoff with jitter            |
| LeaseBusy                   | retry    | no           | another worker holds the record            |
| InfrastructureFault         | retry    | no           | our database or broker failed              |
| PauseAccount                | pause    | no           | message returned; account consumer stops   |
| DeadLetter                  | dead     |              | reason recorded                            |
| anything else (a bug)       | retry    | yes          | then dead-lettered as ``internal_error``   |

Once a message has used ``max_attempts``, a retry becomes a dead-letter with reason
``attempts_exhausted`` (or ``internal_error``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from lmsbridge.errors import (
    DeadLetter,
    InfrastructureFault,
    LeaseBusy,
    ParkRecord,
    PauseAccount,
    RetryAfter,
    RetryLater,
)

ActionKind = Literal["ack", "retry", "pause", "dead"]


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a message after its handler ran."""

    kind: ActionKind
    attempt: int = 0  # the attempt number the retried message carries
    delay: float = 0.0
    reason: str = ""
    error: str = ""


def backoff(attempt: int, steps: tuple[float, ...], rng: random.Random | None = None) -> float:
    """Exponential backoff from the configured steps, with +-20 % jitter."""
    base = steps[min(max(attempt - 1, 0), len(steps) - 1)]
    return base * (0.8 + 0.4 * (rng or random).random())


def decide(exc: BaseException | None, *, attempt: int, max_attempts: int, steps: tuple[float, ...]) -> Action:
    """Map a handler's outcome to an :class:`Action`. ``attempt`` is the message's attempts so far."""
    if exc is None or isinstance(exc, ParkRecord):
        return Action("ack", reason=getattr(exc, "reason", ""))
    if isinstance(exc, DeadLetter):
        return Action("dead", reason=exc.reason, error=str(exc))
    if isinstance(exc, PauseAccount):
        return Action("pause", attempt=attempt, reason=f"stackone_{exc.status}", error=str(exc))
    if isinstance(exc, LeaseBusy):
        return Action("retry", attempt=attempt, delay=steps[0], reason="lease_busy")
    if isinstance(exc, InfrastructureFault):
        return Action("retry", attempt=attempt, delay=backoff(1, steps), reason="infrastructure", error=str(exc))
    used = attempt + 1
    if isinstance(exc, RetryLater):
        if used >= max_attempts:
            return Action("dead", reason="attempts_exhausted", error=str(exc))
        delay = exc.delay if isinstance(exc, RetryAfter) else backoff(used, steps)
        return Action("retry", attempt=used, delay=delay, reason="transient", error=str(exc))
    error = f"{type(exc).__name__}: {exc}"
    if used >= max_attempts:
        return Action("dead", reason="internal_error", error=error)
    return Action("retry", attempt=used, delay=backoff(used, steps), reason="internal_error", error=error)
