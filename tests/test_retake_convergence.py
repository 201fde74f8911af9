"""Retakes and renames converge: any order, duplicates and sync points end in one LMS state.

Like tests/test_convergence.py: the real service on a real SQLite file and the real StackOne
stand-in over HTTP; only the queue between ingest and sync is a collecting fake, so the test
chooses the order. Events: created, a Fail (40 %), a Pass (85 %) and a later Fail (55 %) of
one person and training, the training renamed by the later ones.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from tests.test_convergence import drive

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
KEY = "retake-convergence-key"


def _event(
    message_id: str, days: int, title: str, passed: bool | None = None, score: float | None = None
) -> AssignmentEvent:
    kind = "assignment.created" if passed is None else "assignment.completed"
    return AssignmentEvent(
        message_id=message_id,
        source="acme",
        platform="exec",
        type=kind,
        occurred_at=T0 + timedelta(days=days),
        received_at=T0,
        correlation_id=message_id,
        assignment_id="asg-1",
        learning_object=LearningObject(external_reference="exec:scenario:renewal", title=title),
        assigned_at=T0,
        people=(PersonProgress(email="jane@acme.example", passed=passed, score=score),),
    )


EVENTS = [
    _event("m-created", 0, "Renewal"),
    _event("m-fail", 1, "Renewal", False, 40.0),
    _event("m-pass", 5, "Renewal 2026", True, 85.0),
    _event("m-fail-late", 7, "Renewal (2026)", False, 55.0),
]
PASS = ("Pass", {"percentage": 85.0}, "2026-06-03T08:00:00.000Z")
FAIL_40 = ("Fail", {"percentage": 40.0}, "2026-05-30T08:00:00.000Z")
FAIL_55 = ("Fail", {"percentage": 55.0}, "2026-06-05T08:00:00.000Z")


async def _scenario(order: list[int], sync_points: list[bool], seed: int, account: str) -> dict[str, Any]:
    standin, _ = await drive(EVENTS, order, sync_points, seed, account, key=KEY)
    return {
        "violations": list(standin.violations),
        "assignments": len(standin.assignments(account)),
        "completions": [
            (c["body"]["result"]["value"], c["body"].get("score"), c["body"].get("completed_at"))
            for c in standin.completions(account)
        ],
        "title": standin.content(account)["exec:scenario:renewal"]["title"],
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.lists(st.sampled_from([0, 1, 2, 3]), min_size=3, max_size=8).filter(lambda o: 2 in o),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_retakes_and_renames_converge(order: list[int], data: st.DataObject, seed: int) -> None:
    """Created, Fail 40 %, Pass 85 % and a later Fail 55 % in any order, duplicated, synced at random points:
    exactly one Pass (its own score and time) written last, before it only Fails that each beat the
    one written before, one assignment, and the newest title in the LMS."""
    sync_points = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    result = asyncio.run(_scenario(order, sync_points, seed, account=f"acc-{seed}"))
    assert result["violations"] == []
    assert result["assignments"] == 1
    completions = result["completions"]
    assert completions[-1] == PASS
    assert completions.count(PASS) == 1
    # Before the Pass, at most the Fails that each beat the one written before (never a lower score).
    assert completions[:-1] in ([], [FAIL_40], [FAIL_55], [FAIL_40, FAIL_55])
    newest = max((EVENTS[i] for i in order), key=lambda e: e.occurred_at)
    assert result["title"] == newest.learning_object.title
