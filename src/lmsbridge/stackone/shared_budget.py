"""One StackOne rate budget for every process using an API key, with no share to set by hand.

The budget itself lives where every process reaches it (:class:`SlotSource`, the database
in production, see :mod:`lmsbridge.storage.budget`): evenly spaced *slots*, ``60 / (limit x
headroom)`` seconds apart, each given to exactly one process. This class is the process's
side: it claims a few slots at a time while requests wait (once the slots it holds cover less
than those waiting and those the last second's pace says will come within about ``batch``
seconds, enough for twice that many, at most ``batch`` seconds' worth a claim, never more than
``horizon`` ahead of now: a steady stream of requests finds its slot held, instead of paying a
claim's round trip each, and claims about once per batch rather than once every slot or two),
sleeps until each slot's moment and gives it to the next waiting request, live before
background (:mod:`lmsbridge.lanes`; a slot just due is kept back a moment, two slots' worth,
while only background requests wait, since a live request would otherwise find it gone and
wait for the next), by account in round-robin order, so one account's backlog cannot starve
another's in this process, and every process gets its turn at the shared row.

What follows from slots rather than per-process shares:

* a process joining takes slots at its next claim, one leaving or dying stops taking them: the
  budget rebalances within ``horizon`` with nothing to configure;
* the requests of all processes in any sliding minute stay under the key's limit: slots are
  disjoint and ``interval`` apart, whoever holds them (``headroom`` keeps 2 % back for clock and
  network jitter between our slot and StackOne's count);
* a 429's ``Retry-After`` seen by any process is written to the shared row: no process is given
  a slot before it ends; slots already held elsewhere (at most ``horizon`` of them) still go out.

A database that fails a claim delays requests (retried with backoff), never lets them through
uncounted. :meth:`SharedRateLimiter.admitted` is the workers' backpressure: no new job while the
requests this process already expects (those waiting, and those its admitted jobs will still
make) would outlast a share of the sync lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Protocol

from lmsbridge.lanes import in_background
from lmsbridge.logs import get_logger
from lmsbridge.stackone.turns import Turns, capped_pause

log = get_logger(__name__)

__all__ = ["SharedRateLimiter", "SlotGrant", "SlotSource"]

HEADROOM = 0.98
# A slot more than this late is dropped: used now it would add to a minute already full of others' slots.
_STALE = 1.0
_PACE_WINDOW = 10.0  # seconds over which a process's pace of slots is measured
# Seconds of claims whose round trips bound the source's clock (short: our clock and theirs may drift apart).
_OFFSET_WINDOW = 10.0
# Weight of each finished job in the running mean of the requests an admitted job makes.
_PER_JOB_WEIGHT = 0.1

# The requests granted so far to the admitted job the running task (and the tasks it started) works for.
_job_requests: ContextVar[list[int] | None] = ContextVar("lmsbridge_budget_job", default=None)


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a claim's failure as seen (the runner that waits for it logs it)."""
    if not task.cancelled():
        task.exception()


class SlotGrant(Protocol):
    """What a claim returns (see :class:`lmsbridge.storage.budget.Grant`)."""

    @property
    def first(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def now(self) -> float: ...
    @property
    def retry_at(self) -> float: ...


class SlotSource(Protocol):
    """Where the shared slots come from."""

    async def claim(self, key: str, holder: str, want: int, interval: float, horizon: float) -> SlotGrant:
        """Up to ``want`` slots ``interval`` apart, none more than ``horizon`` past now (the source's clock)."""
        ...

    async def pause(self, key: str, seconds: float) -> float:
        """No slot for anyone before the source's now + ``seconds``."""
        ...

    async def sharers(self, key: str, within: float) -> int:
        """How many holders claimed slots in the last ``within`` seconds."""
        ...


class SharedRateLimiter:
    """This process's door to a key's shared budget: round-robin by account, slots from the source."""

    def __init__(
        self,
        source: SlotSource,
        key: str,
        per_minute: float,
        *,
        holder: str,
        headroom: float = HEADROOM,
        batch: float = 0.1,
        horizon: float = 0.5,
        max_pause: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if not 0 < max_pause < math.inf:
            raise ValueError("max_pause must be positive and finite")
        self._source = source
        self._key = key
        self._holder = holder
        self._per_minute = float(per_minute)
        self._interval = 60.0 / (per_minute * headroom)
        self._batch = max(1, math.floor(batch / self._interval))
        self._horizon = max(horizon, batch)
        self._lookahead = min(self._horizon / 2, max(2.5 * batch, 2 * self._interval))
        self._max_pause = max_pause
        self._clock = clock
        self._slots: deque[float] = deque()  # on our clock, ascending
        self._turns = Turns()
        self._granted = 0
        self._dropped = 0  # slots held while nobody waited, then too late to use
        self._claim_seconds = 0.0  # time spent in claims (the database's round trips)
        self._pace: deque[tuple[float, int]] = deque()  # (when, granted so far): the recent pace
        self._offsets: deque[tuple[float, float]] = deque()  # (when, a bound on our clock minus the source's)
        self._recent: deque[float] = deque()  # when each slot of the last second was given
        self._held_back = 0  # times new work was held back by admit()
        self._jobs = [0, 0]  # admitted jobs not finished yet: live, background
        self._per_job = 1.0  # requests an admitted job makes, a running mean
        self._sharers = 1  # processes assumed to share the key until this one's pace is measured
        self._served = asyncio.Event()  # set whenever a waiting request is given a slot
        self._live_joined = asyncio.Event()  # set whenever a live request starts waiting
        # A slot just due is kept this long for a live request before a background one may take it.
        self._live_hold = min(2 * self._interval, 0.25)
        self._claims = 0
        self._paused_until = float("-inf")
        self._claim_after = float("-inf")
        self._runner: asyncio.Task[None] | None = None
        self._claiming: asyncio.Task[None] | None = None
        self._pauses: set[asyncio.Task[None]] = set()

    # --- public -------------------------------------------------------------------------

    async def acquire(self, account: str) -> None:
        """Wait for a slot; FIFO within an account, round-robin across accounts."""
        background = in_background()
        future = self._turns.join(account, background=background)
        if not background:
            self._live_joined.set()  # a slot kept back for live requests is given now
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="stackone-budget")
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Given a slot, but cancelled before it could send: the slot goes to the next waiter.
                self._slots.appendleft(self._clock())
                self._granted -= 1
            else:
                self._turns.leave(future)
            raise
        job = _job_requests.get()
        if job is not None:
            job[0] += 1

    def pause(self, seconds: float) -> None:
        """Stop this process now, and every process at its next claim, for ``seconds`` (capped at ``max_pause``)."""
        capped = capped_pause(seconds, self._max_pause)
        if capped is None:
            return
        seconds = capped
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._slots.clear()
        task = asyncio.get_running_loop().create_task(self._share_pause(seconds))
        self._pauses.add(task)
        task.add_done_callback(self._pauses.discard)

    def backlog(self) -> float:
        """Seconds the requests ahead of a new one of the running task's lane (:mod:`lmsbridge.lanes`)
        would take at the pace this process was given slots lately.

        Ahead are the requests waiting here, or, when more, those the admitted jobs ahead of it (the
        live lane's, and the background lane's for background work) make at their running mean, at
        least one each (:meth:`admitted`). The pace is measured over the last ~10 s; with no history
        yet it is an equal share of the key's rate among the processes that drew on it lately
        (:meth:`learn_sharers`; the whole rate for the first one). Workers take on no new work while
        this exceeds a share of their lease: a sync that waits longer than its lease loses it, and
        the slots it is then given are spent for nothing.
        """
        now = self._clock()
        if not self._pace or now - self._pace[-1][0] >= 0.5:  # a sample every half second is enough
            self._pace.append((now, self._granted))
        while len(self._pace) > 2 and self._pace[1][0] <= now - _PACE_WINDOW:
            self._pace.popleft()
        first_at, first_granted = self._pace[0]
        elapsed = now - first_at
        rate = (self._granted - first_granted) / elapsed if elapsed >= 1.0 else 0.0
        if rate <= 0:
            rate = 1.0 / self._interval / self._sharers  # slots a second
        background = in_background()
        jobs = self._jobs[0] + (self._jobs[1] if background else 0)
        return max(self._turns.ahead_of(background), jobs * max(1.0, self._per_job)) / rate

    @contextlib.asynccontextmanager
    async def admitted(self, limit: float) -> AsyncIterator[None]:
        """Run one job (a message's work) once the requests ahead of it would be served within
        ``limit`` seconds (:meth:`backlog`), and count it among them until it ends.

        A job admitted counts at once, before it asks for its first slot: a prefetch's worth of
        messages waiting here cannot all pass in the moment the backlog dips under ``limit`` (they
        did, and their syncs then waited out their leases in the queue). The requests a job makes
        feed the running mean the next jobs are counted at.
        """
        await self.admit(limit)
        background = in_background()
        self._jobs[background] += 1
        made = [0]
        token = _job_requests.set(made)
        try:
            yield
        finally:
            _job_requests.reset(token)
            self._jobs[background] -= 1
            self._per_job += _PER_JOB_WEIGHT * (made[0] - self._per_job)
            self._served.set()  # a job waiting for admission may fit now

    async def admit(self, limit: float) -> None:
        """Wait until the requests ahead would be served within ``limit`` seconds (see :meth:`backlog`)."""
        if self.backlog() <= limit:
            return
        self._held_back += 1
        while True:
            self._served.clear()
            if self.backlog() <= limit:
                return
            with contextlib.suppress(TimeoutError):  # re-measured at least every half second
                await asyncio.wait_for(self._served.wait(), 0.5)

    async def learn_sharers(self) -> None:
        """Count the processes that drew on the key in the last ~10 s, so that a worker joining a busy
        key does not take a prefetch's worth of jobs at the whole key's pace before its own is measured."""
        try:
            others = await self._source.sharers(self._key, _PACE_WINDOW)
        except Exception as exc:  # then it assumes the whole rate, as the first process does
            log.warning("stackone.budget_sharers_failed", error=type(exc).__name__)
            return
        self._sharers = others + 1

    def snapshot(self) -> dict[str, float]:
        """``per_minute``, ``waiting``, ``paused_for``, ``granted_total``, ``dropped_total``, ``claims_total``,
        ``slots_held`` and ``jobs`` (admitted, not finished)."""
        return {
            "per_minute": self._per_minute,
            "waiting": float(self._turns.waiting),
            "paused_for": max(0.0, self._paused_until - self._clock()),
            "granted_total": float(self._granted),
            "dropped_total": float(self._dropped),
            "claims_total": float(self._claims),
            "slots_held": float(len(self._slots)),
            "jobs": float(sum(self._jobs)),
        }

    async def close(self) -> None:
        """Stop the claiming task and wait for pauses still being written; log what this process drew."""
        log.info(
            "stackone.budget_closed",
            granted=self._granted,
            claims=self._claims,
            dropped=self._dropped + len(self._slots),
            claim_ms=round(1000 * self._claim_seconds / max(1, self._claims), 1),
            held_back=self._held_back,
            requests_per_job=round(self._per_job, 2),
        )
        for task in (self._runner, self._claiming):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._pauses:
            await asyncio.gather(*self._pauses, return_exceptions=True)

    # --- internals ----------------------------------------------------------------------

    async def _share_pause(self, seconds: float) -> None:
        try:
            await self._source.pause(self._key, seconds)
        except Exception as exc:  # the local pause holds; the others learn of it from their own 429s
            log.warning("stackone.budget_pause_failed", error=type(exc).__name__)

    async def _run(self) -> None:
        """Hand out slots while anyone waits, claiming more before the held ones run out; ends when nobody waits."""
        failures = 0
        loop = asyncio.get_running_loop()
        while self._turns.waiting > 0:
            now = self._clock()
            while self._slots and self._slots[0] < now - _STALE:
                self._slots.popleft()  # held while nobody waited: spent now it would crowd others' slots
                self._dropped += 1
            ahead = self._expected()
            need_more = len(self._slots) < self._turns.waiting + ahead
            # Claim when the slots held cover less than the lookahead, no pause is on, no claim failed
            # lately; the claim runs beside the granting, so a slow database never delays a slot held.
            claim_at = max(self._claim_after, self._paused_until)
            if self._slots:
                claim_at = max(claim_at, self._slots[-1] - self._lookahead)
            if need_more and now >= claim_at and self._claiming is None:
                # Up to twice the lookahead's worth: claiming only the shortfall made a claim (a database
                # write transaction) every 2.4 grants, each one a chance to wait on the repository's lock.
                want = min(self._turns.waiting + 2 * ahead - len(self._slots), self._batch)
                self._claiming = loop.create_task(self._claim(want))
                # A claim still under way when nobody waits any more is taken up by the next runner.
                self._claiming.add_done_callback(_retrieved)
            due = self._slots[0] if self._slots else math.inf
            if due <= now and now >= self._paused_until:
                if self._turns.ahead_of(background=False) or now >= due + self._live_hold:
                    self._slots.popleft()
                    self._grant_next()
                    continue
                # Only background requests wait and the slot is fresh: a live request may come within
                # moments and would then wait for the next slot. It goes to background once older.
                due += self._live_hold
            # Sleep until the next slot is due, a claim may be made, or the claim under way is back.
            wake = [max(due, self._paused_until)] if self._slots else []
            if need_more and self._claiming is None:
                wake.append(claim_at)
            timeout = max(0.0, min(wake, default=now + 0.05) - now)
            if self._claiming is None:
                self._live_joined.clear()
                with contextlib.suppress(TimeoutError):  # a live request joining cuts a hold short
                    await asyncio.wait_for(self._live_joined.wait(), timeout)
                continue
            done, _ = await asyncio.wait({self._claiming}, timeout=timeout)
            if not done:
                continue
            claim, self._claiming = self._claiming, None
            error = claim.exception()
            if error is None:
                failures = 0
                continue
            failures += 1
            delay = min(5.0, 0.1 * 2**failures)
            self._claim_after = self._clock() + delay
            log.warning("stackone.budget_claim_failed", error=type(error).__name__, retry_in=delay)

    async def _claim(self, want: int) -> None:
        asked = self._clock()
        grant = await self._source.claim(self._key, self._holder, max(1, want), self._interval, self._horizon)
        answered = self._clock()
        offset = self._offset(asked, answered, grant.now)
        self._claims += 1
        self._claim_seconds += answered - asked
        if grant.count == 0:
            self._claim_after = grant.retry_at + offset
            return
        first = grant.first + offset
        self._slots.extend(first + i * self._interval for i in range(grant.count))

    def _offset(self, asked: float, answered: float, their_now: float) -> float:
        """Our clock minus the source's, as tight as the recent claims allow, never too small.

        The source's ``now`` fell between asking and the answer, so ``answered - now`` bounds the
        offset from above: slots placed with it are late by the part of the round trip after
        ``now``, never early. One slow claim (a busy database) would place its slots that much
        late and crowd the next process's; the smallest bound of the last few seconds' claims is
        the tightest (NTP's minimum filter), and ``asked - now`` the floor should the clocks drift.
        """
        self._offsets.append((answered, answered - their_now))
        while self._offsets[0][0] < answered - _OFFSET_WINDOW:
            self._offsets.popleft()
        return max(min(bound for _, bound in self._offsets), asked - their_now)

    def _expected(self) -> int:
        """Requests likely to come within the next claim's worth of time, at the pace of the last second."""
        now = self._clock()
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        return math.ceil(len(self._recent) * self._batch * self._interval)

    def _grant_next(self) -> None:
        """Give one slot to the next account in turn (a slot nobody waits for any more is lost)."""
        if self._turns.serve_next():
            self._granted += 1
            self._recent.append(self._clock())
            self._served.set()
        else:
            self._dropped += 1
