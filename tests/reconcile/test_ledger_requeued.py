"""The delivery ledger balances when events reach an intake queue without a webhook.

A reconcile pass (the command's, a worker's periodic one) and a dead-letter replay put events in
the intake queues, which the workers settle like any other; they are counted ``requeued``, an
input beside the receivers' ``accepted``, and ``lmsbridge status`` adds them up from the database.
Before, they were not counted: once settled, ``in_flight`` went negative and status said "broken:
more settled than accepted". Real RabbitMQ, a SQLite file and stand-ins for the platforms.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from lmsbridge import dlq
from lmsbridge.ops import gather_status
from lmsbridge.reconcile.run import reconcile_command
from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings
from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.limeplate import LimeplateStandIn, make_team_assignment
from lmsbridge.testing.webhooks import WebhookSender, limeplate_assignment, limeplate_created
from tests.pipeline.conftest import settled
from tests.reconcile.test_exec import tenant

Start = Callable[..., Awaitable[Runtime]]
SETTLED = ("upserted", "duplicate", "dead_lettered")


def _stage(runtime: Runtime, stage: str) -> int:
    return int(runtime.metrics.count(stage))


async def _ledger_when_written(settings: Settings, runtime: Runtime, timeout: float = 15.0) -> dict[str, Any]:
    """``status``'s ledger once the database holds what ``runtime`` settled (it writes every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        ledger: dict[str, Any] = (await gather_status(settings))["system_ledger"]
        if all(ledger[s] == _stage(runtime, s) for s in SETTLED) or time.monotonic() > deadline:
            return ledger
        await asyncio.sleep(0.3)


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_reconcile_command_s_repairs_once_settled_leave_the_ledger_balanced(
    reconcile_settings: Callable[..., Settings],
    start_runtime: Start,
    exec_api: ExecStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``lmsbridge reconcile`` queues the events of 12 assignments no webhook brought; a worker
    settles them: ``status`` counts them ``requeued`` (the command's own final row) and says the
    identity holds with 0 in flight. Before: accepted 0, settled 12, in flight -12, "broken: more
    settled than accepted"."""
    for assignment in tenant(12, seed=3):
        exec_api.put(assignment)
    settings = reconcile_settings()
    worker = await start_runtime(settings, receiver=False)
    assert await reconcile_command(settings, sources=["acme-sales"]) == 0
    assert "ledger" not in capsys.readouterr().err
    await _until(lambda: sum(_stage(worker, s) for s in SETTLED) >= 12)
    await settled(worker)
    ledger = await _ledger_when_written(settings, worker)
    assert ledger["upserted"] + ledger["duplicate"] == 12, ledger
    assert (ledger["in_flight"], ledger["identity"]) == (0, "holds"), ledger
    assert (ledger["accepted"], ledger["requeued"]) == (0, 12), ledger


async def test_a_worker_s_periodic_pass_counts_what_it_queues(
    reconcile_settings: Callable[..., Settings],
    start_runtime: Start,
    exec_api: ExecStandIn,
) -> None:
    """A worker's periodic pass (``reconcile.interval`` 1 s) repairs 8 assignments no webhook
    brought: the worker counts each event it queued ``requeued`` as RabbitMQ confirms it, so its
    own in-flight gauge and ``status`` balance (0 in flight, identity holds). Before: status said
    in flight -8, broken."""
    for assignment in tenant(8, seed=5):
        exec_api.put(assignment)
    settings = reconcile_settings(reconcile={"interval": 1.0})
    worker = await start_runtime(settings, receiver=False)
    await _until(lambda: _stage(worker, "upserted") >= 8)
    await settled(worker)
    ledger = await _ledger_when_written(settings, worker)
    assert (ledger["in_flight"], ledger["identity"]) == (0, "holds"), ledger
    assert ledger["requeued"] == 8, ledger
    assert _stage(worker, "requeued") == sum(_stage(worker, s) for s in SETTLED) == 8


async def _dead_lettered_webhook(
    settings: Settings, start_runtime: Start, sender_for: Callable[[Runtime], WebhookSender]
) -> tuple[Runtime, str]:
    """A receiver and worker; one team assignment accepted whose members the platform cannot give
    yet (404): the worker dead-letters its event."""
    runtime = await start_runtime(settings)
    listed = limeplate_assignment("asg-replayed")
    status, _ = await sender_for(runtime).post("acme-security", limeplate_created(listed))
    assert status == 202
    await _until(lambda: _stage(runtime, "dead_lettered") == 1)
    return runtime, listed["id"]


async def test_a_dead_event_replayed_and_settled_leaves_the_ledger_balanced(
    reconcile_settings: Callable[..., Settings],
    start_runtime: Start,
    sender_for: Callable[[Runtime], WebhookSender],
    platform: LimeplateStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An accepted event dead-lettered (its assignment not yet on the platform), then replayed with
    ``dlq replay --all`` once it is, and stored: the ledger reads accepted 1, requeued 1, upserted 1,
    dead-lettered 1, 0 in flight, identity holds. Before: in flight -1, "broken: more settled than
    accepted"."""
    settings = reconcile_settings()
    runtime, assignment = await _dead_lettered_webhook(settings, start_runtime, sender_for)
    platform.add_assignment(make_team_assignment(3, assignment_id=assignment))
    assert await dlq.replay(settings, None) == 0
    assert "ledger" not in capsys.readouterr().err
    await _until(lambda: _stage(runtime, "upserted") == 1)
    await settled(runtime)
    ledger = await _ledger_when_written(settings, runtime)
    assert (ledger["in_flight"], ledger["identity"]) == (0, "holds"), ledger
    counts = {k: ledger[k] for k in ("accepted", "requeued", "upserted", "duplicate", "dead_lettered")}
    assert counts == {"accepted": 1, "requeued": 1, "upserted": 1, "duplicate": 0, "dead_lettered": 1}


async def test_a_replay_whose_ledger_write_is_refused_still_replays_and_says_so_once(
    reconcile_settings: Callable[..., Settings],
    start_runtime: Start,
    sender_for: Callable[[Runtime], WebhookSender],
    platform: LimeplateStandIn,
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database refuses the replay's counter row (a trigger, as a full disk would): the dead
    event still goes back and is stored, ``dlq replay`` exits 0, and one stderr line says the
    delivery ledger was not updated."""
    settings = reconcile_settings()
    runtime, assignment = await _dead_lettered_webhook(settings, start_runtime, sender_for)
    platform.add_assignment(make_team_assignment(2, assignment_id=assignment))
    with sqlite3.connect(sqlite_url.removeprefix("sqlite+aiosqlite:///"), timeout=30) as db:
        db.execute(
            "CREATE TRIGGER refuse_replay BEFORE INSERT ON ledger_counts WHEN NEW.process LIKE '%:dlq-replay:%' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    assert await dlq.replay(settings, None) == 0
    captured = capsys.readouterr()
    assert "replayed 1 message(s)" in captured.out
    said = [line for line in captured.err.splitlines() if "ledger" in line]
    assert len(said) == 1, captured.err
    assert said[0].startswith("lmsbridge: dlq replay: the delivery ledger was not updated ("), said
    await _until(lambda: _stage(runtime, "upserted") == 1)
