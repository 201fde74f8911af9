"""Shared fixtures: the real RabbitMQ and PostgreSQL (failing loudly when absent), temp SQLite files.

Every test gets its own broker prefix (so its own exchanges and queues) and its own
database, and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest

AMQP_URL = os.environ.get("LMSBRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_URL = os.environ.get("LMSBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=3):
            return True
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test timing sub-second behaviour in this process (it asks for ``steady_gc``) is ``serial``
    too: beside other tests' processes on two cores its event loop stalls now and then, and what it
    times bunches up (a rate limiter's grants, measured 27 in a second against 21 allowed)."""
    for item in items:
        if "steady_gc" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The real RabbitMQ; the test FAILS (never skips) when it is unreachable."""
    if not _reachable(AMQP_URL, 5672):
        pytest.fail(f"RabbitMQ is unreachable at {urlsplit(AMQP_URL).hostname}: start it (rabbitmq-server -detached)")
    return AMQP_URL


@pytest.fixture
def steady_gc() -> Iterator[None]:
    """For tests that time sub-second behaviour inside this process: no full collection of the test
    process's own heap lands in the middle of them.

    By the end of the suite that heap takes a full collection 200-800 ms (measured with
    ``gc.callbacks``), long enough to bunch a rate limiter's grants or outlast a test's wait; a
    service process's heap is a small fraction of it. The heap is collected and frozen before the
    test and unfrozen after it; what the test itself creates is collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    """../shared/specs beside the project; the test FAILS when it is missing."""
    if not (SPECS / "stackone-lms.openapi.json").is_file():
        pytest.fail(f"the specs are missing: expected {SPECS}")
    return SPECS


@pytest.fixture
def stackone_spec(specs_dir: Path) -> Path:
    """StackOne's LMS OpenAPI spec."""
    return specs_dir / "stackone-lms.openapi.json"


@pytest.fixture
async def broker_prefix(amqp_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A unique exchange/queue prefix for one test; everything under it is deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    await delete_prefix(amqp_url, prefix, request.node.name)


async def delete_prefix(amqp_url: str, prefix: str, name: str = "cleanup") -> None:
    """Delete the queues and exchanges a test declared under ``prefix``."""
    connection = await aio_pika.connect(amqp_url, client_properties={"connection_name": f"cleanup-{name}"[:100]})
    async with connection:
        channel = await connection.channel()
        for suffix in ["events", "dead", *[f"delay.{i}" for i in range(8)]]:
            await channel.queue_delete(f"{prefix}.{suffix}")
        for account in _accounts_seen.pop(prefix, set()):
            await channel.queue_delete(f"{prefix}.sync.{account}")
        for source in _sources_seen.pop(prefix, set()):
            await channel.queue_delete(f"{prefix}.events.{source}")
        for exchange in (prefix, f"{prefix}.delay", f"{prefix}.dead"):
            await channel.exchange_delete(exchange)


_accounts_seen: dict[str, set[str]] = {}
_sources_seen: dict[str, set[str]] = {}


async def take_messages(amqp_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything ``queue_name`` holds, taken off it (acknowledged), oldest first."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        return taken


def remember_accounts(prefix: str, accounts: list[str], *, sources: Iterable[str] = ()) -> None:
    """Note the sync (and intake) queues a test will create, so cleanup removes them."""
    _accounts_seen.setdefault(prefix, set()).update(accounts)
    _sources_seen.setdefault(prefix, set()).update(sources)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'lmsbridge.db'}"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The real PostgreSQL; the test FAILS (never skips) when it is unreachable."""
    if not _reachable(PG_URL, 5432):
        pytest.fail("PostgreSQL is unreachable at 127.0.0.1:5432: start it (pg_ctlcluster ... main start)")
    return PG_URL


def _admin(url: str, sql: str) -> None:
    """Run one statement on the admin database from a thread of its own (usable from any fixture)."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"lmsbridge_{uuid.uuid4().hex[:12]}"
    _admin(pg_admin_url, f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_admin_url)
    yield f"postgresql+asyncpg://{parts.netloc}/{name}"
    _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
