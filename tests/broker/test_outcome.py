"""The pure retry rules: decide(), full-jitter backoff, the delay ladder and the circuit breaker."""

from __future__ import annotations

import random
import statistics
import tracemalloc

from lmsbridge.broker.breaker import Breaker, database_fault
from lmsbridge.broker.outcome import Policy, decide, full_jitter
from lmsbridge.broker.topology import delay_level, jittered_level
from lmsbridge.errors import (
    BrokerUnavailable,
    DeadLetter,
    InfrastructureFault,
    LeaseBusy,
    ParkRecord,
    PauseAccount,
    RetryAfter,
    RetryLater,
    WriteUncertain,
)
from lmsbridge.settings import BrokerSettings

POLICY = Policy(backoff_base=1.0, backoff_cap=300.0, max_retry_age=86400.0, max_attempts=3)
NOW = 1_800_000_000.0


def test_a_broker_fault_raised_through_an_event_is_an_infrastructure_retry_not_a_bug() -> None:
    """An event whose inline sync could not be settled (RabbitMQ did not confirm its retry: a
    restart, an alarm) raises BrokerUnavailable: retried as infrastructure, using no attempt, and
    never dead-lettered as ``internal_error`` however often it happens."""
    for attempt in (0, POLICY.max_attempts - 1, POLICY.max_attempts + 5):
        action = decide(
            BrokerUnavailable("RabbitMQ did not confirm in time"),
            attempt=attempt,
            failing_since=None,
            now=NOW,
            policy=POLICY,
        )
        assert (action.kind, action.reason, action.attempt) == ("retry", "infrastructure", attempt)


def test_each_outcome_maps_to_its_action() -> None:
    """Success acks; a park, a pause and a permanent refusal are what they say; lease and infrastructure
    retries use no attempt; a transient failure uses one and starts its failing clock."""
    assert decide(None, attempt=0, failing_since=None, now=NOW, policy=POLICY).kind == "ack"
    parked = decide(ParkRecord("user_not_found", "x"), attempt=0, failing_since=None, now=NOW, policy=POLICY)
    assert (parked.kind, parked.reason) == ("park", "user_not_found")
    dead = decide(DeadLetter("stackone_422", "x"), attempt=0, failing_since=None, now=NOW, policy=POLICY)
    assert (dead.kind, dead.reason) == ("dead", "stackone_422")
    pause = decide(PauseAccount("a", 403, "x"), attempt=2, failing_since=None, now=NOW, policy=POLICY)
    assert (pause.kind, pause.reason, pause.attempt) == ("pause", "stackone_403", 2)
    for exc in (LeaseBusy("x"), InfrastructureFault("x")):
        action = decide(exc, attempt=2, failing_since=None, now=NOW, policy=POLICY)
        assert (action.kind, action.attempt, action.transient) == ("retry", 2, False)
    transient = decide(RetryLater("503"), attempt=2, failing_since=None, now=NOW, policy=POLICY)
    assert (transient.kind, transient.attempt, transient.failing_since, transient.transient) == ("retry", 3, NOW, True)


def test_transient_failures_dead_letter_by_age_not_by_count() -> None:
    """A 5xx after 1,000 attempts is still retried while the record has failed for less than
    max_retry_age; past it, it is dead-lettered as retry_age_exceeded."""
    young = decide(RetryLater("503"), attempt=1000, failing_since=NOW - 86000, now=NOW, policy=POLICY)
    assert young.kind == "retry"
    assert young.failing_since == NOW - 86000
    old = decide(RetryLater("503"), attempt=1, failing_since=NOW - 86401, now=NOW, policy=POLICY)
    assert (old.kind, old.reason) == ("dead", "retry_age_exceeded")


def test_a_bug_is_dead_lettered_after_max_attempts() -> None:
    """An unexpected exception is retried, and dead-lettered as internal_error at max_attempts."""
    assert decide(KeyError("x"), attempt=1, failing_since=None, now=NOW, policy=POLICY).kind == "retry"
    dead = decide(KeyError("x"), attempt=2, failing_since=None, now=NOW, policy=POLICY)
    assert (dead.kind, dead.reason) == ("dead", "internal_error")


def test_retry_after_and_uncertain_writes_wait_at_least_what_they_ask() -> None:
    """A 429's Retry-After and an uncertain write's remaining lease are minimum delays."""
    for exc in (RetryAfter("429", delay=7.0), WriteUncertain("408", delay=7.0)):
        action = decide(exc, attempt=0, failing_since=None, now=NOW, policy=POLICY)
        assert (action.delay, action.at_least) == (7.0, True)
    settings = BrokerSettings(retry_delays=(1.0, 5.0, 30.0))
    assert delay_level(settings, 7.0) == 2


def test_full_jitter_stays_under_the_doubling_ceiling_and_the_cap() -> None:
    """Backoff n is uniform in [0, min(cap, base * 2^(n-1))]: never above it, and spread over it."""
    rng = random.Random(1)
    for used, ceiling in ((1, 1.0), (2, 2.0), (5, 16.0), (30, 300.0)):
        draws = [full_jitter(used, POLICY, rng) for _ in range(2000)]
        assert min(draws) >= 0.0
        assert max(draws) <= ceiling
        assert max(draws) > 0.9 * ceiling
        assert abs(statistics.mean(draws) - ceiling / 2) < 0.05 * ceiling


def test_a_backoff_is_rounded_onto_the_delay_ladder_keeping_its_mean() -> None:
    """With delay queues of 1, 5, 30 s, a backoff of 10 s goes to the 5 s or the 30 s queue, so that the
    mean is 10 s; shorter than the first level goes to it; levels above backoff_cap are not used."""
    settings = BrokerSettings(retry_delays=(1.0, 5.0, 30.0, 600.0), backoff_cap=300.0)
    rng = random.Random(2)
    levels = [jittered_level(settings, 10.0, rng) for _ in range(4000)]
    assert set(levels) == {1, 2}
    assert abs(statistics.mean(settings.retry_delays[level] for level in levels) - 10.0) < 0.6
    assert jittered_level(settings, 0.1, rng) == 0
    assert jittered_level(settings, 299.0, rng) == 2


def test_the_breaker_opens_on_a_high_share_of_5xx_and_timeouts_only() -> None:
    """With min_calls 5 and rate 0.8, four failures and one success keep it closed, a fifth failure in
    six opens it; 429s and permanent refusals never count."""
    clock = [0.0]
    breaker = Breaker(window=10.0, min_calls=5, failure_rate=0.8, clock=lambda: clock[0])
    assert not breaker.record("a", None)
    for _ in range(20):
        assert not breaker.record("a", RetryAfter("429", delay=1.0))
        assert not breaker.record("a", DeadLetter("stackone_400", "x"))
    for _ in range(3):
        assert not breaker.record("a", RetryLater("503"))
    assert not breaker.record("b", RetryLater("503"))  # another account's window
    assert breaker.record("a", WriteUncertain("timeout", delay=0.0))  # 4 of 5
    clock[0] = 100.0  # the window slid past everything: closed, and counting from zero
    assert not breaker.record("a", RetryLater("503"))


def test_the_database_breaker_opens_on_a_high_share_of_database_faults_only() -> None:
    """Judged by database_fault: jobs the database failed count as failures, jobs that succeeded as
    successes; a StackOne outage, a 429 or a dead letter is not the database's and counts for neither."""
    breaker = Breaker(window=10.0, min_calls=5, failure_rate=0.8, clock=lambda: 0.0, judge=database_fault)
    for _ in range(20):
        assert not breaker.record("database", RetryLater("503"))
        assert not breaker.record("database", RetryAfter("429", delay=1.0))
        assert not breaker.record("database", DeadLetter("stackone_400", "x"))
    assert not breaker.record("database", None)
    for _ in range(3):
        assert not breaker.record("database", InfrastructureFault("database: SQLITE_FULL"))
    assert breaker.record("database", InfrastructureFault("database: SQLITE_FULL"))  # 4 of 5


def test_the_breaker_forgets_the_failures_that_left_its_window() -> None:
    """Failures counted as they come and go (not summed per call): 1,000 old failures that slid out of the
    window count for nothing, and the share is judged over the outcomes still in it."""
    clock = [0.0]
    breaker = Breaker(window=10.0, min_calls=5, failure_rate=0.8, clock=lambda: clock[0])
    for _ in range(3):
        assert not breaker.record("a", RetryLater("503"))
    clock[0] = 5.0
    for _ in range(1000):
        assert not breaker.record("a", None)
    clock[0] = 20.0  # everything above is out of the window
    for _ in range(4):
        assert not breaker.record("a", RetryLater("503"))
    assert not breaker.record("a", None)  # 4 failures of 5, but a success never opens it
    assert breaker.record("a", RetryLater("503"))  # 5 of 6


def test_the_breaker_holds_a_minute_of_outcomes_in_little_memory_and_still_weighs_them_all() -> None:
    """A draining worker's pace (3,600 outcomes a second for the 60 s window) is held in well under
    100 KB: each outcome kept alone held about 19 MB. The window still weighs every one of them: with
    all 216,000 successes in it, at rate 0.5 it opens on the 216,000th failure, not one before."""
    clock = [0.0]
    breaker = Breaker(window=60.0, min_calls=20, failure_rate=0.5, clock=lambda: clock[0], judge=database_fault)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(216_000):
            clock[0] = i / 3600
            assert not breaker.record("database", None)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 100_000, held

    clock[0] = 60.0  # the first success is 60 s old: still in the window
    full = InfrastructureFault("database: SQLITE_FULL")
    opened_at = next(n for n in range(1, 216_002) if breaker.record("database", full))
    assert opened_at == 216_000
