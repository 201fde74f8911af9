"""Poison events in the worker's intake (issue 13 item 1): dead-lettered with a reason, never retried forever.

The events are published straight into the intake queue, as the receiver publishes what it
accepted, so no receiver-side validation stands in the way: this is the worker's own
defence. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Start
from tests.pipeline.conftest import ACCOUNT, SettingsFactory
from tests.storage.test_poison import DECODABLE, POISON, make_event, poison_event

# What may become of a poison event: stored (SQLite holds it), refused by the database
# (``unstorable``), or refused by the worker's own decoding (the models forbid most of them).
DEAD_REASONS = {"unstorable", "poison_message"}


def _stage(runtime: Runtime, stage: str) -> float:
    """``lmsbridge_events_total{stage=...}``."""
    return float(runtime.metrics.registry.get_sample_value("lmsbridge_events_total", {"stage": stage}) or 0.0)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_poison_events_are_dead_lettered_and_the_valid_one_lands(
    request: pytest.FixtureRequest,
    database: str,
    make_settings: SettingsFactory,
    start_runtime: Start,
    stackone: StackOneStandIn,
    dead_letters: DeadLetters,
) -> None:
    """Seven poison events and one valid event, all queued before the worker starts (so they share
    group-commit transactions): every poison event is settled within seconds, stored or dead-lettered
    with its reason (all of them on PostgreSQL, where the two that decode are ``unstorable``), none
    is retried as an infrastructure fault, and the valid event's assignment reaches the LMS.

    Before the fix, on PostgreSQL each poison event came back every second (``event.retried``,
    attempt 0) for ever, and the valid event failed with whichever poison shared its transaction.
    """
    jane = stackone.add_user(ACCOUNT, "jane@acme.example")
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url")
    settings = make_settings(database_url=url, broker={"retry_delays": (0.1, 0.2, 0.4)})
    publisher = await start_runtime(settings, receiver=False, worker=False)  # the broker alone, as a receiver
    events = [poison_event(case) for case in POISON] + [make_event(message_id="valid-1")]
    for event in events:
        await publisher.broker.publish_event(event, timeout=5.0)

    runtime = await start_runtime(settings, receiver=False, worker=True)
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        settled = _stage(runtime, "upserted") + _stage(runtime, "dead_lettered") + _stage(runtime, "duplicate")
        if settled >= len(events) and stackone.assignments(ACCOUNT):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # any retry would show by now (the delays are 0.1-0.4 s)

    dead = await dead_letters.list()
    assert _stage(runtime, "retried") == 0, f"poison retried: {[(d.reason, d.error) for d in dead]}"
    assert _stage(runtime, "upserted") + _stage(runtime, "dead_lettered") == len(events)
    assert {d.reason for d in dead} <= DEAD_REASONS, [(d.reason, d.error) for d in dead]
    if database == "postgres":
        assert len(dead) == len(POISON), [(d.message_id, d.reason) for d in dead]
        assert {d.message_id: d.reason for d in dead if d.reason == "unstorable"}.keys() >= {
            f"poison-{case}" for case in DECODABLE
        }, [(d.message_id, d.reason, d.error) for d in dead]
    assert all(d.error and "\x00" not in d.error for d in dead)
    assert [d.tries for d in dead] == [1] * len(dead), "each dead on its one try"
    [landed] = [a for a in stackone.assignments(ACCOUNT) if a["user_id"] == jane]
    assert landed["body"]["learning_object_external_reference"] == "exec:scenario:discovery-call"
