"""Learning objects are upserted before anything points at them, and once per account."""

from __future__ import annotations

import asyncio

from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, settled
from tests.pipeline.conftest import ACCOUNT, SettingsFactory

REF = "exec:scenario:discovery-call"


async def test_twenty_records_for_one_learning_object_upsert_it_once_and_first(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """20 people assigned the same scenario at once: one content batch call, made before the first assignment."""
    people = [f"learner{i:02d}@acme.example" for i in range(20)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)

    await asyncio.gather(*(assign(sender, email) for email in people))

    assert await settled(runtime) == {ACCOUNT: {"synced": 20}}
    assert len(stackone.assignments(ACCOUNT)) == 20
    batches = calls(stackone, "POST", "/unified/lms/content/batch")
    assert calls(stackone, "PUT", "/unified/lms/content") == []
    assert len(batches) == 1, f"{len(batches)} content upserts for one learning object"
    assert [item["external_reference"] for item in batches[0].json["items"]] == [REF]
    first_assignment = calls(stackone, "POST", "/assignments")[0]
    assert stackone.requests.index(batches[0]) < stackone.requests.index(first_assignment)
    assert stackone.violations == []
