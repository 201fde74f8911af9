"""Fixtures and helpers for delivery tests: StackOne misbehaving while lmsbridge runs for real.

The pipeline fixtures (a running lmsbridge on the real RabbitMQ and a SQLite file, the
StackOne and platform stand-ins, a webhook sender) are reused from ``tests/pipeline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from lmsbridge.broker.dead import DeadLetters
from lmsbridge.people import People
from lmsbridge.runtime import Runtime
from lmsbridge.service import Service
from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone import StackOneClient
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.fakes import CollectingSyncQueue
from lmsbridge.testing.stackone import RecordedRequest, StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import (  # noqa: F401  (fixtures are found by name)
    STACKONE_KEY,
    make_settings,
    platform,
    sender_for,
    settled,
    stackone,
    start_runtime,
)

__all__ = [
    "Clock",
    "Sender",
    "Start",
    "assign",
    "calls",
    "record_count",
    "settled",
    "sync_status",
    "two_workers",
    "wait_for",
]

Start = Callable[..., Awaitable[Runtime]]
Sender = Callable[[Runtime], WebhookSender]


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: list[float]

    def __call__(self) -> float:
        """The current time."""
        return self.now[0]


@contextlib.asynccontextmanager
async def two_workers(
    standin: StackOneStandIn, database: Path, account: str, lease: float
) -> AsyncIterator[tuple[Repository, list[tuple[Service, list[float]]]]]:
    """Two worker processes' services on one SQLite file (source ``acme`` synced to ``account``),
    each with a StackOne client of its own on the stand-in (5 s a request), a lease of ``lease``
    seconds and a clock the test moves (from 1000.0); their sync queue is a collecting fake, so
    the test decides who syncs when. Yields the repository and each (service, clock)."""
    repo = Repository(create_engine(f"sqlite+aiosqlite:///{database}"))
    await upgrade(repo.engine)
    try:
        async with aiohttp.ClientSession() as session:
            settings = StackOneSettings(base_url=standin.url, api_key=STACKONE_KEY, timeout=5.0)
            built = []
            for _ in range(2):
                client = StackOneClient(session, settings, user_agent="lmsbridge/test")
                now = [1000.0]
                service = Service(
                    intake=repo.intake,
                    leases=repo.leases,
                    content=repo.content,
                    stackone=client,
                    queue=CollectingSyncQueue(),
                    accounts_of={"acme": [account]},
                    platforms={},
                    people=People(repo.directory, repo.accounts, client, refresh_after=3600),
                    lease_seconds=lease,
                    clock=Clock(now),
                )
                built.append((service, now))
            yield repo, built
    finally:
        await repo.close()


@pytest.fixture
async def blind_stackone(stackone_spec: Path) -> AsyncIterator[StackOneStandIn]:
    """A StackOne stand-in whose LMS ignores ``filter[email]`` (returns every user)."""
    standin = StackOneStandIn(api_key=STACKONE_KEY, spec_path=stackone_spec, honour_email_filter=False)
    await standin.start()
    yield standin
    await standin.close()


@pytest.fixture
def dead_letters(amqp_url: str, broker_prefix: str) -> DeadLetters:
    """Operator access to this test's dead-letter queue (what ``lmsbridge dlq`` uses)."""
    return DeadLetters(amqp_url, broker_prefix)


async def assign(
    sender: WebhookSender,
    email: str,
    *,
    source: str = "acme-sales",
    scenario: str = "discovery-call",
    name: str = "Discovery Call",
) -> None:
    """Post a signed Exec ``assignment.created`` for ``email`` and expect 202."""
    assignment = exec_assignment(f"as-{scenario}-{email}", email, scenario=scenario, name=name)
    status, body = await sender.post(source, exec_event("assignment.created", assignment))
    assert status == 202, body


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")


async def sync_status(runtime: Runtime, account: str) -> dict[str, int]:
    """The account's sync rows by status (``{}`` when it has none)."""
    assert runtime.repo is not None
    return (await runtime.repo.stats.status_counts()).get(account, {})


def record_count(runtime: Runtime, stage: str) -> float:
    """``lmsbridge_records_total{stage=...}``: (record, account) syncs that reached ``stage``."""
    return float(runtime.metrics.registry.get_sample_value("lmsbridge_records_total", {"stage": stage}) or 0.0)


def calls(
    standin: StackOneStandIn,
    method: str,
    path_end: str,
    *,
    account: str | None = None,
    query: str | None = None,
) -> list[RecordedRequest]:
    """Requests the stand-in received with ``method`` on a path ending in ``path_end``.

    ``query`` keeps only requests carrying that query parameter.
    """
    return [
        r
        for r in standin.requests
        if r.method == method
        and r.path.endswith(path_end)
        and (account is None or r.account == account)
        and (query is None or query in r.query)
    ]
