"""A record changed while its sync is writing: the row never says synced with a write still missing.

A completion that arrives while the assignment is being created is merged into the record; the
consumer holding the lease finds the record changed when it records the assignment, keeps the
row pending and writes the completion in the same sync. Before, the assignment's write marked
the row synced and the completion waited, the row saying synced, for the retry of the consumer
that stored it (and had that message been lost, the sweeper skips synced rows).
"""

from __future__ import annotations

import asyncio

from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, settled, sync_status
from tests.delivery.test_recovery import FAST, complete
from tests.pipeline.conftest import ACCOUNT, SettingsFactory

JANE = "jane.smith@acme.example"


async def test_a_completion_merged_while_the_assignment_is_written_is_written_before_the_row_says_synced(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """The assignment's create hangs 1.5 s; the completion webhook arrives meanwhile. Sampled every
    20 ms until both are in the LMS, the record's row is never synced while the completion is
    missing, and the LMS ends with one assignment and one completion."""
    stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings(broker=FAST))
    stackone.fail_next(0, delay=1.5, method="POST", path_contains="/assignments")
    sender = sender_for(runtime)

    await assign(sender, JANE)
    while not any(r.method == "POST" and "/assignments" in r.path for r in stackone.requests):
        await asyncio.sleep(0.01)
    await complete(sender, JANE)

    claimed_early: list[dict[str, int]] = []
    for _ in range(1000):
        status = await sync_status(runtime, ACCOUNT)
        if not stackone.completions(ACCOUNT) and status.get("synced"):
            claimed_early.append(status)
        if stackone.completions(ACCOUNT) and status.get("synced"):
            break
        await asyncio.sleep(0.02)

    assert claimed_early == [], "the row said synced while the completion was not in the LMS"
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert (len(stackone.assignments(ACCOUNT)), len(stackone.completions(ACCOUNT))) == (1, 1)
