"""The StackOne stand-in on 127.0.0.1, checking every request against StackOne's spec, and clients for it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone import Observer, RateLimiter, StackOneClient
from lmsbridge.stackone.client import WaitObserver
from lmsbridge.testing.stackone import StackOneStandIn

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "specs" / "stackone-lms.openapi.json"
KEY = "sk_test_5f3a9c81d2e44b07a6c1"
ACCOUNT = "acc-acme"
USER_AGENT = "lmsbridge/0.1.0"

ClientFactory = Callable[..., StackOneClient]


@pytest.fixture(scope="session")
def spec_path() -> Path:
    """StackOne's LMS OpenAPI spec beside the project; the test FAILS (never skips) when it is missing."""
    if not SPEC.is_file():
        pytest.fail(f"StackOne's spec is missing: expected {SPEC}")
    return SPEC


@pytest.fixture
async def standin(spec_path: Path) -> AsyncIterator[StackOneStandIn]:
    """A fresh stand-in per test, validating requests against the spec."""
    server = StackOneStandIn(api_key=KEY, spec_path=spec_path)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP client session per test."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def make_client(standin: StackOneStandIn, session: aiohttp.ClientSession) -> ClientFactory:
    """Build a client for the stand-in (or another ``base_url``), with optional limiter and observer."""

    def make(
        *,
        api_key: str = KEY,
        base_url: str | None = None,
        timeout: float = 5.0,
        page_size: int = 100,
        limiter: RateLimiter | None = None,
        on_response: Observer | None = None,
        on_budget_wait: WaitObserver | None = None,
        user_agent: str = USER_AGENT,
    ) -> StackOneClient:
        settings = StackOneSettings(
            base_url=base_url or standin.url, api_key=api_key, timeout=timeout, page_size=page_size
        )
        return StackOneClient(
            session,
            settings,
            user_agent=user_agent,
            limiter=limiter,
            on_response=on_response,
            on_budget_wait=on_budget_wait,
        )

    return make


@pytest.fixture
def client(make_client: ClientFactory) -> StackOneClient:
    """A client with the right key, talking to the stand-in."""
    return make_client()


@pytest.fixture
def refused_url() -> str:
    """A local URL nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
