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


BUCKETS = 60
"""Each window is counted in this many buckets (one second each at the default 60 s window)."""


class Breaker:
    """Sliding windows of outcomes, one per key (an account), judged by ``judge``.

    Outcomes are counted in buckets of ``window / BUCKETS`` seconds, each dropped once its newest
    outcome has left the window, so the window slides in steps of a bucket and holds at most
    ``BUCKETS + 1`` buckets a key, however many outcomes a second come. (Each outcome kept alone,
    a draining worker held a minute of them: 19 MB at 1,200 events a second, three outcomes an
    event.)
    """

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
        self._width = window / BUCKETS
        self._min_calls = min_calls
        self._rate = failure_rate
        self._clock = clock
        self._buckets: dict[str, deque[_Bucket]] = {}
        self._totals: dict[str, _Bucket] = {}  # each key's outcomes in its window (kept, not summed per call)

    def record(self, account: str, exc: BaseException | None) -> bool:
        """Note one sync outcome; True when the account's breaker opens (pause it now)."""
        failed = self._judge(exc)
        if failed is None:
            return False
        now = self._clock()
        buckets = self._buckets.get(account)
        if buckets is None:
            buckets = self._buckets[account] = deque()
            self._totals[account] = _Bucket(now)
        totals = self._totals[account]
        while buckets and buckets[0].newest < now - self._window:
            gone = buckets.popleft()
            totals.calls -= gone.calls
            totals.failures -= gone.failures
        if not buckets or now >= buckets[-1].start + self._width:
            buckets.append(_Bucket(now))
        bucket = buckets[-1]
        bucket.newest = now
        bucket.calls += 1
        bucket.failures += failed
        totals.calls += 1
        totals.failures += failed
        if failed and totals.calls >= self._min_calls and totals.failures >= self._rate * totals.calls:
            self.reset(account)  # closed again once the account is resumed
            return True
        return False

    def reset(self, account: str) -> None:
        """Forget an account's outcomes (it was paused, or it has just been resumed)."""
        self._buckets.pop(account, None)
        self._totals.pop(account, None)


class _Bucket:
    """Outcomes from ``start`` to ``newest`` (or a key's totals): how many, and how many failed."""

    __slots__ = ("calls", "failures", "newest", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.newest = start
        self.calls = 0
        self.failures = 0
