"""The garbage collector's settings a started process runs with (issue 15)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lmsbridge.runtime import GC_THRESHOLDS, _freeze_startup_objects


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Put the test session's own collector settings back afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_a_started_process_keeps_its_startup_objects_out_of_collections_and_collects_young_objects_less_often(
    restored_gc: None,
) -> None:
    """After start-up, what exists is frozen and the young generation is collected every 50,000
    allocations (not Python's 700); the older generations keep their defaults."""
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    kept = [object() for _ in range(10)]
    _freeze_startup_objects()
    assert gc.get_freeze_count() > len(kept)
    assert gc.get_threshold() == GC_THRESHOLDS == (50_000, 10, 10)
