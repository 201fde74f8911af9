"""The fields a block binds for its log lines (`lmsbridge.logs.bound`)."""

from __future__ import annotations

import asyncio

import structlog
from structlog.testing import capture_logs

from lmsbridge.logs import bound, merge_bound

log = structlog.get_logger("tests.logs")


def test_a_block_adds_its_fields_and_an_inner_block_wins_until_it_ends() -> None:
    """Lines inside a block carry its fields, an inner block overrides a field only while it runs,
    a field given to the call itself beats both, and nothing is left bound after the block."""
    with capture_logs(processors=[merge_bound]) as logs:
        with bound(correlation_id="c1", account="a1"):
            log.info("outer")
            with bound(account="a2", record_id="r1"):
                log.info("inner")
                log.info("explicit", account="a3")
            log.info("outer.again")
        log.info("after")
    by_event = {entry["event"]: entry for entry in logs}
    assert by_event["outer"]["correlation_id"] == "c1"
    assert by_event["outer"]["account"] == "a1"
    assert by_event["inner"]["account"] == "a2"
    assert by_event["inner"]["record_id"] == "r1"
    assert by_event["inner"]["correlation_id"] == "c1"
    assert by_event["explicit"]["account"] == "a3"
    assert by_event["outer.again"]["account"] == "a1"
    assert "record_id" not in by_event["outer.again"]
    assert not {"correlation_id", "account", "record_id"} & set(by_event["after"])


async def test_tasks_started_inside_a_block_keep_its_fields_and_do_not_leak_theirs() -> None:
    """A task started in a block logs the block's fields even after the block ended; what the task
    binds for itself is not seen by its parent or a sibling."""
    release = asyncio.Event()

    async def child(name: str) -> None:
        with bound(record_id=name):
            await release.wait()
            log.info("child", name=name)

    with capture_logs(processors=[merge_bound]) as logs:
        with bound(correlation_id="parent"):
            tasks = [asyncio.create_task(child("r1")), asyncio.create_task(child("r2"))]
            await asyncio.sleep(0)
        log.info("parent.after")
        release.set()
        await asyncio.gather(*tasks)
    children = {entry["name"]: entry for entry in logs if entry["event"] == "child"}
    assert {name: entry["record_id"] for name, entry in children.items()} == {"r1": "r1", "r2": "r2"}
    assert all(entry["correlation_id"] == "parent" for entry in children.values())
    after = next(entry for entry in logs if entry["event"] == "parent.after")
    assert "correlation_id" not in after
    assert "record_id" not in after
