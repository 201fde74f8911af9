"""The drift rule for a training assigned again: a new cycle's completion is drift, a cycle alone is not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from lmsbridge.domain import Rank, RecordState
from lmsbridge.reconcile.findings import UPDATED, drift

T0 = datetime(2025, 3, 3, tzinfo=UTC)


def _passed(cycle: datetime | None, days: int) -> RecordState:
    return RecordState(
        rank=Rank.COMPLETED,
        learning_object_ref="exec:scenario:renewal",
        title="Renewal",
        email="jane@acme.example",
        progress=100.0,
        completed_at=(cycle or T0) + timedelta(days=days),
        passed=True,
        score=85.0,
        cycle_at=cycle,
    )


def test_the_next_cycle_completed_on_the_platform_is_drift_and_the_same_cycle_is_not() -> None:
    """The platform shows this year's Pass (same result and score) while lmsbridge holds last
    year's: ``updated``, so the pass queues it and it is written (before: in step, never
    written). The same completion seen again is in step, with or without its cycle known (a
    record stored before cycles were kept has none: the first pass after the upgrade must not
    queue every completed record again)."""
    last_year = _passed(T0, 5)
    this_year = _passed(T0 + timedelta(days=365), 5)
    assert drift(last_year, this_year) == UPDATED
    assert drift(last_year, last_year) is None
    assert drift(replace(last_year, cycle_at=None), last_year) is None
    assert drift(this_year, last_year) is None
