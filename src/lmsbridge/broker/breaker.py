"""Circuit breakers over outcomes: one per StackOne account, and one over the database.

When most of an account's recent syncs failed with a 5xx, a timeout or no connection
(``failure_rate`` of at least ``min_calls`` outcomes within ``window`` seconds), the
account is failing rather than its records: the consumer pauses the account's queue and
probes it, as for a 401/403/412, instead of letting every record burn its retries. A 429
is the rate limiter's business and counts for neither side; a permanent refusal is the
record's own trouble and does not count either.

The same window over every job's outcome, judged by :func:`database_fault`, says when the
database is failing rather than a statement: the consumer then stops consuming altogether and
probes the database (a full disk, a read-only file system, PostgreSQL down for longer than a
restart), instead of sending every message round its retry queue twice a second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from lmsbridge.errors import InfrastructureFault, RetryAfter, RetryLater, WriteUncertain


def outage_like(exc: BaseException | None) -> bool | None:
    """True for a failure that says the account is failing, False for a success, None when it says neither."""
    if exc is None:
        return False
    if isinstance(exc, RetryAfter) and not isinstance(exc, WriteUncertain):
        return None  # 429: the rate limiter slows the whole key down
    if isinstance(exc, RetryLater):
        return True  # 5xx, timeout, 408, no connection, an unreadable answer
    return None


def database_fault(exc: BaseException | None) -> bool | None:
    """True when the database failed a job, False for a job that succeeded, None otherwise."""
    if exc is None:
        return False
    return True if isinstance(exc, InfrastructureFault) else None


class Breaker:
    """Sliding windows of outcomes, one per key (an account), judged by ``judge``."""

    def __init__(
        self,
        *,
        window: float,
        min_calls: int,
        failure_rate: float,
        clock: Callable[[], float] = time.monotonic,
        judge: Callable[[BaseException | None], bool | None] = outage_like,
    ) -> None:
        self._judge = judge
        self._window = window
        self._min_calls = min_calls
        self._rate = failure_rate
        self._clock = clock
        self._outcomes: dict[str, deque[tuple[float, bool]]] = {}
        self._failures: dict[str, int] = {}  # failures among each account's outcomes (kept, not summed per call)

    def record(self, account: str, exc: BaseException | None) -> bool:
        """Note one sync outcome; True when the account's breaker opens (pause it now)."""
        failed = self._judge(exc)
        if failed is None:
            return False
        now = self._clock()
        outcomes = self._outcomes.setdefault(account, deque())
        outcomes.append((now, failed))
        failures = self._failures.get(account, 0) + failed
        while outcomes and outcomes[0][0] < now - self._window:
            failures -= outcomes.popleft()[1]
        self._failures[account] = failures
        if failed and len(outcomes) >= self._min_calls and failures >= self._rate * len(outcomes):
            outcomes.clear()  # closed again once the account is resumed
            self._failures[account] = 0
            return True
        return False

    def reset(self, account: str) -> None:
        """Forget an account's outcomes (it was paused, or it has just been resumed)."""
        self._outcomes.pop(account, None)
        self._failures.pop(account, None)
