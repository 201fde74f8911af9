"""Convergence: any interleaving and duplication of a record's events ends in one LMS state.

Runs the real service against a real SQLite file and the real StackOne stand-in over HTTP;
only the queue between ingest and sync is a collecting fake, so the test can choose the order.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.people import People
from lmsbridge.service import Service
from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone import StackOneClient
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.fakes import CollectingSyncQueue
from lmsbridge.testing.stackone import StackOneStandIn

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
KEY = "convergence-key"
SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "stackone-lms.openapi.json"


def _event(message_id: str, kind: str, passed: bool | None = None, score: float | None = None) -> AssignmentEvent:
    return AssignmentEvent(
        message_id=message_id,
        source="acme",
        platform="exec",
        type=kind,
        occurred_at=T0 + (timedelta(days=3) if kind.endswith("completed") else timedelta()),
        received_at=T0,
        correlation_id=message_id,
        assignment_id="asg-1",
        learning_object=LearningObject(external_reference="exec:scenario:renewal", title="Renewal"),
        assigned_at=T0,
        due_date=T0 + timedelta(days=14),
        people=(PersonProgress(email="jane@acme.example", passed=passed, score=score),),
    )


EVENTS = [_event("m-created", "assignment.created"), _event("m-done", "assignment.completed", True, 88.0)]


async def drive(
    events: Sequence[AssignmentEvent],
    order: list[int],
    sync_points: list[bool],
    seed: int,
    account: str,
    *,
    key: str = KEY,
) -> tuple[StackOneStandIn, str]:
    """Ingest ``events[i]`` for each ``i`` in ``order`` through the real service, syncing a random
    queued task (sometimes twice, as a redelivery) where ``sync_points`` says, then everything left.

    Returns the stand-in (stopped; it keeps what it received) and the StackOne id of jane@acme.example.
    """
    standin = StackOneStandIn(api_key=key, spec_path=SPEC)
    await standin.start()
    uid = standin.add_user(account, "jane@acme.example")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(create_engine(f"sqlite+aiosqlite:///{tmp}/c.db"))
        await upgrade(repo.engine)
        async with aiohttp.ClientSession() as session:
            client = StackOneClient(
                session, StackOneSettings(base_url=standin.url, api_key=key), user_agent="lmsbridge/test"
            )
            queue = CollectingSyncQueue()
            service = Service(
                intake=repo.intake,
                leases=repo.leases,
                content=repo.content,
                stackone=client,
                queue=queue,
                accounts_of={"acme": [account]},
                platforms={},
                people=People(repo.directory, repo.accounts, client, refresh_after=3600),
            )
            rng = random.Random(seed)
            backlog: list[tuple[int, str]] = []
            for index, sync_now in zip(order, sync_points, strict=True):
                await service.ingest(events[index])
                backlog += queue.take()
                if sync_now and backlog:
                    rng.shuffle(backlog)
                    task = backlog.pop()
                    await service.sync(*task)
                    if rng.random() < 0.5:
                        await service.sync(*task)  # a redelivered sync task
            for task in backlog:
                await service.sync(*task)
        await repo.close()
    await standin.close()
    return standin, uid


async def _scenario(order: list[int], sync_points: list[bool], seed: int, account: str) -> dict[str, Any]:
    standin, uid = await drive(EVENTS, order, sync_points, seed, account)
    writes = Counter((r.method, r.path.rsplit("/", 1)[-1]) for r in standin.requests if r.method in ("POST", "PUT"))
    return {
        "violations": list(standin.violations),
        "assignments": [
            (a["user_id"] == uid, a["body"]["learning_object_external_reference"]) for a in standin.assignments(account)
        ],
        "completions": [
            (c["body"]["result"]["value"], c["body"].get("score"), c["body"].get("completed_at"))
            for c in standin.completions(account)
        ],
        "writes": writes,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.lists(st.sampled_from([0, 1]), min_size=2, max_size=6).filter(lambda o: 0 in o and 1 in o),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_any_order_and_duplicates_converge(order: list[int], data: st.DataObject, seed: int) -> None:
    """Created/completed in any order, duplicated, synced at random points: one assignment, one completion."""
    sync_points = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    result = asyncio.run(_scenario(order, sync_points, seed, account=f"acc-{seed}"))
    assert result["violations"] == []
    assert result["assignments"] == [(True, "exec:scenario:renewal")]
    assert result["completions"] == [("Pass", {"percentage": 88.0}, "2026-06-01T08:00:00.000Z")]
    assert result["writes"][("POST", "assignments")] == 1
    assert result["writes"][("POST", "completions")] == 1
    assert result["writes"][("POST", "batch")] == 1
