"""Periodic reconciliation in the worker: one pass at a time across workers, seen in status and metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractChannel
from structlog.testing import capture_logs

from lmsbridge.broker import Broker, Names
from lmsbridge.broker.codec import SyncTask
from lmsbridge.metrics import Metrics
from lmsbridge.ops import gather_status
from lmsbridge.reconcile import periodic
from lmsbridge.reconcile.lms import pass_name
from lmsbridge.runtime import Runtime
from lmsbridge.stackone.ratelimit import RateLimiter
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.reconcile import ReconcileStore
from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.limeplate import LimeplateStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from tests.pipeline.conftest import settled
from tests.reconcile.conftest import ACCOUNT
from tests.reconcile.test_exec import tenant

Start = Callable[..., Awaitable[Runtime]]


async def test_the_lease_lets_one_holder_at_a_time_and_frees_on_expiry(reconcile_settings: Callable[..., Any]) -> None:
    """A held lease refuses another owner, is renewed by its holder, and is taken over once expired or released."""
    settings = reconcile_settings()
    engine = create_engine(settings.database_url.get_secret_value())
    from lmsbridge.storage.migrate import upgrade

    await upgrade(engine)
    store = ReconcileStore(engine)
    try:
        assert await store.take_lease("periodic", "a", 100.0, 10.0)
        assert not await store.take_lease("periodic", "b", 105.0, 10.0)
        assert await store.take_lease("periodic", "a", 108.0, 10.0)  # renewed to 118
        assert not await store.take_lease("periodic", "b", 117.0, 10.0)
        assert await store.take_lease("periodic", "b", 118.5, 10.0)  # expired
        await store.release_lease("periodic", "a")  # not a's any more: nothing happens
        assert not await store.take_lease("periodic", "a", 119.0, 10.0)
        await store.release_lease("periodic", "b")
        assert await store.take_lease("periodic", "a", 119.0, 10.0)
    finally:
        await store.close()
        await engine.dispose()


async def test_two_workers_reconcile_periodically_one_pass_per_interval(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
) -> None:
    """Two workers with ``reconcile.interval`` 1 s and a tenant never webhooked: the LMS converges
    with no help, the workers together make about one pass per interval (never two at once), and
    ``status`` and the metrics show the last pass."""
    assignments = tenant(40, seed=9)
    for a in assignments:
        exec_api.put(a)
    for email in sorted({a["user"]["email"] for a in assignments}):
        stackone.add_user(ACCOUNT, email)
    settings = reconcile_settings(reconcile={"interval": 1.0})
    first = await start_runtime(settings, receiver=False)
    second = await start_runtime(settings, receiver=False)
    started = time.monotonic()
    deadline = started + 20
    while len(stackone.assignments()) < 40 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await settled(first)
    await asyncio.sleep(2.5)
    elapsed = time.monotonic() - started
    assert len(stackone.assignments()) == 40
    assert len({(a["user_id"], a["body"]["learning_object_external_reference"]) for a in stackone.assignments()}) == 40
    passes = exec_api.list_calls  # one page per pass
    assert 2 <= passes <= elapsed / 0.9 + 1

    def finished() -> float:
        return sum(
            runtime.metrics.registry.get_sample_value(
                "lmsbridge_reconcile_runs_total", {"source": "acme-sales", "outcome": "finished"}
            )
            or 0.0
            for runtime in (first, second)
        )

    # A pass may be under way as the two are read (it listed, it has not finished): each pass that
    # listed is counted finished within moments, so both are read together until they agree.
    deadline = time.monotonic() + 10
    while (runs := finished()) != exec_api.list_calls and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert runs == exec_api.list_calls, (runs, exec_api.list_calls)
    status = await gather_status(settings)
    last = status["reconcile"]["acme-sales"]
    assert last["outcome"] == "finished"
    assert last["last_success"] is not None
    assert f"lms:{ACCOUNT}" in status["reconcile"]


async def test_a_pass_of_one_source_by_hand_does_not_put_off_the_others(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    exec_api: ExecStandIn,
    platform: LimeplateStandIn,
) -> None:
    """An operator reconciled one source ten minutes ago: the round passes over the other source and
    the LMS account, and leaves that one for a later round (before: any recent pass, of anything,
    skipped the whole round, so the others went a round without reconciliation)."""
    settings = reconcile_settings(reconcile={"interval": 3600.0})
    runtime = await start_runtime(settings, receiver=False)
    assert runtime.repo is not None
    assert runtime.session is not None
    assert runtime.limiter is not None
    store = ReconcileStore(runtime.repo.engine)
    try:
        by_hand = time.time() - 600
        await store.record_pass(
            "acme-security", started_at=by_hand, duration=1.0, outcome="finished", findings={}, error=None
        )
        ran = await periodic.reconcile_round(
            settings, store, runtime.broker, runtime.session, runtime.metrics, runtime.limiter, "w1"
        )
        assert ran
        assert (exec_api.list_calls, platform.list_calls()) == (1, 0)
        last = {p.source: p.started_at for p in await store.passes()}
        assert last["acme-security"] == by_hand
        assert last["acme-sales"] > by_hand
        assert last[f"lms:{ACCOUNT}"] > by_hand
        assert not await periodic.reconcile_round(
            settings, store, runtime.broker, runtime.session, runtime.metrics, runtime.limiter, "w1"
        )  # nothing is due any more
    finally:
        await store.close()


async def test_a_worker_runs_its_first_round_soon_after_it_starts(
    reconcile_settings: Callable[..., Any],
    start_runtime: Start,
    exec_api: ExecStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a 1 h interval and no pass ever recorded, a worker reconciles soon after it starts
    (``FIRST_ROUND_AFTER``, lowered here from a minute), not an hour later: a fleet restarted more
    often than every interval reconciled never."""
    monkeypatch.setattr(periodic, "FIRST_ROUND_AFTER", 0.5, raising=False)
    await start_runtime(reconcile_settings(reconcile={"interval": 3600.0}), receiver=False)
    deadline = time.monotonic() + 10
    while exec_api.list_calls == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert exec_api.list_calls == 1


async def test_an_account_with_a_backlog_is_checked_once_it_has_drained(
    reconcile_settings: Callable[..., Any], stackone: StackOneStandIn
) -> None:
    """With more messages ready for an account than the backlog limit (2 here: sync tasks in its
    queue, events at the intake of a source pushing to it), a round reads nothing from its LMS and
    records no pass for it (``reconcile.lms_deferred``, with the count); the account stays due, and
    once the count is down to the limit the next round checks it."""
    settings = reconcile_settings(reconcile={"interval": 3600.0})
    engine = create_engine(settings.database_url.get_secret_value())
    await upgrade(engine)
    store = ReconcileStore(engine)
    broker = Broker.configured(settings, name="test")
    session = aiohttp.ClientSession()

    def listed() -> list[str]:
        return [r.path for r in stackone.requests if r.method == "GET" and r.path.startswith("/unified/lms/")]

    async def round_(owner: str) -> bool:
        limiter = RateLimiter(600_000)
        return await periodic.reconcile_round(settings, store, broker, session, Metrics(), limiter, owner, backlog=2)

    try:
        await broker.start(wait=10)
        for record_id in (1, 2, 3):
            await broker.publish_sync(SyncTask(record_id, ACCOUNT), correlation_id="c", received_at=time.time())
        with capture_logs() as logs:
            assert await round_("w1")
        assert listed() == []
        [deferred] = [e for e in logs if e["event"] == "reconcile.lms_deferred"]
        assert (deferred["account"], deferred["ready"], deferred["above"]) == (ACCOUNT, 3, 2)
        assert pass_name(ACCOUNT) not in {p.source for p in await store.passes()}

        # Down to the limit in its sync queue, but an event waiting at the intake of a source that
        # pushes to it: still three messages ready for it, still deferred.
        source = next(name for name, src in settings.sources.items() if ACCOUNT in src.accounts)
        names = Names(settings.broker.prefix)
        channel = await broker.channel()
        await take_one(channel, names.sync(ACCOUNT))
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), names.intake(source))
        with capture_logs() as logs:
            assert await round_("w1")
        assert listed() == []
        assert [(e["account"], e["ready"]) for e in logs if e["event"] == "reconcile.lms_deferred"] == [(ACCOUNT, 3)]

        await take_one(channel, names.intake(source))
        await channel.close()
        assert await round_("w1")
        assert sorted(set(listed())) == ["/unified/lms/assignments", "/unified/lms/completions"]
        assert pass_name(ACCOUNT) in {p.source for p in await store.passes()}
    finally:
        await session.close()
        await broker.close()
        await store.close()
        await engine.dispose()


async def take_one(channel: AbstractChannel, queue_name: str) -> None:
    """Take one message off ``queue_name`` (acknowledged)."""
    queue = await channel.declare_queue(queue_name, passive=True)
    message = await queue.get(timeout=5)
    await message.ack()
