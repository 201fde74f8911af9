"""A running lmsbridge (receiver + worker) on the real RabbitMQ and a SQLite file, with stand-ins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings, load_settings
from lmsbridge.storage import PENDING
from lmsbridge.testing.limeplate import LimeplateStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender
from tests.conftest import remember_accounts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STACKONE_KEY = "stackone-test-key"
PLATFORM_KEY = "scs_live_testkey"
ACCOUNT = "acc-main"


@pytest.fixture
async def stackone(stackone_spec: Path) -> AsyncIterator[StackOneStandIn]:
    """The StackOne stand-in, checking every request against the spec."""
    standin = StackOneStandIn(api_key=STACKONE_KEY, spec_path=stackone_spec)
    await standin.start()
    yield standin
    await standin.close()


@pytest.fixture
async def platform() -> AsyncIterator[LimeplateStandIn]:
    """The security-training platform's API stand-in."""
    standin = LimeplateStandIn(api_key=PLATFORM_KEY)
    await standin.start()
    yield standin
    await standin.close()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    amqp_url: str, broker_prefix: str, sqlite_url: str, stackone: StackOneStandIn, platform: LimeplateStandIn
) -> SettingsFactory:
    """Build test settings: fast retries, port 0, two sources, overridable per test."""

    def build(accounts: list[str] | None = None, **overrides: Any) -> Settings:
        accts = accounts or [ACCOUNT]
        remember_accounts(broker_prefix, accts)
        values: dict[str, Any] = {
            "amqp_url": amqp_url,
            "database_url": sqlite_url,
            "receiver": {"host": "127.0.0.1", "port": 0, "publish_timeout": 2.0},
            "stackone": {"base_url": stackone.url, "api_key": STACKONE_KEY, "timeout": 5.0},
            "broker": {"prefix": broker_prefix, "retry_delays": (0.2, 0.4, 0.8), "max_attempts": 5, "prefetch": 16},
            "worker": {"metrics_port": 0, "drain_timeout": 5.0, "sync_lease_seconds": 6.0},
            "sources": {
                "acme-security": {
                    "platform": "limeplate",
                    "secrets": [SECRET],
                    "accounts": accts,
                    "api_base_url": platform.url,
                    "api_key": PLATFORM_KEY,
                },
                "acme-sales": {"platform": "exec", "secrets": [SECRET], "accounts": accts},
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        settings = load_settings(**values)
        remember_accounts(broker_prefix, accts, sources=settings.sources)
        return settings

    return build


@pytest.fixture
async def start_runtime() -> AsyncIterator[Callable[..., Awaitable[Runtime]]]:
    """Start lmsbridge runtimes; every one started is stopped after the test."""
    started: list[Runtime] = []

    async def start(settings: Settings, *, receiver: bool = True, worker: bool = True) -> Runtime:
        runtime = Runtime(settings, receiver=receiver, worker=worker)
        await runtime.start(wait=10)
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()


@pytest.fixture
async def sender_for() -> AsyncIterator[Callable[[Runtime], WebhookSender]]:
    """A webhook sender (signing with the test secret) for a running receiver."""
    session = aiohttp.ClientSession()

    def make(runtime: Runtime) -> WebhookSender:
        return WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)

    yield make
    await session.close()


async def settled(runtime: Runtime, *, timeout: float = 20.0) -> dict[str, dict[str, int]]:
    """Wait until no sync row is pending, no work queue holds a message and (with the receiver in
    this runtime) every accepted event is stored; returns the counts.

    A queue's depth counts only messages ready to deliver: an event already sent to the consumer
    but not yet in its hands (its frames not yet read: a stalled event loop, a full collection in
    this test process) is in no queue's depth and no sync row yet. This runtime's accepted events
    not yet upserted, duplicate or dead-lettered still count it. (Not its in-flight gauge, which
    also counts the events its reconcile passes queued: another worker may settle those.)
    """
    assert runtime.repo is not None
    deadline = time.monotonic() + timeout
    counts: dict[str, dict[str, int]] = {}
    quiet_since: dict[str, dict[str, int]] | None = None
    while time.monotonic() < deadline:
        counts = await runtime.repo.stats.status_counts()
        depths = await runtime.update_queue_depths()
        busy = sum(v for k, v in depths.items() if not k.endswith(".dead"))
        m = runtime.metrics
        busy += max(0, int(m.count("accepted") - m.count("upserted") - m.count("duplicate") - m.count("dead_lettered")))
        pending = sum(per.get(PENDING, 0) for per in counts.values())
        if counts and not pending and not busy:
            if quiet_since == counts:  # quiet twice in a row: nothing was in a handler's hands
                return counts
            quiet_since = counts
        else:
            quiet_since = None
        await asyncio.sleep(0.3)
    raise AssertionError(f"not settled in {timeout}s: {counts}")
