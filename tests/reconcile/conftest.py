"""Reconciliation on real services: RabbitMQ, a SQLite file, and stand-ins for StackOne and both platforms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from lmsbridge.settings import Settings, load_settings
from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.limeplate import LimeplateStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from tests.conftest import remember_accounts
from tests.pipeline.conftest import (  # the pipeline's fixtures, shared
    ACCOUNT,
    PLATFORM_KEY,
    SECRET,
    STACKONE_KEY,
    platform,
    sender_for,
    stackone,
    start_runtime,
)

__all__ = ["ACCOUNT", "EXEC_KEY", "platform", "sender_for", "stackone", "start_runtime"]

EXEC_KEY = "exec_live_" + "k" * 40


@pytest.fixture
async def exec_api() -> AsyncIterator[ExecStandIn]:
    """Exec's API stand-in (spec 001's list)."""
    standin = ExecStandIn(api_key=EXEC_KEY, seed=7)
    await standin.start()
    yield standin
    await standin.close()


@pytest.fixture
def reconcile_settings(
    amqp_url: str,
    broker_prefix: str,
    sqlite_url: str,
    stackone: StackOneStandIn,
    platform: LimeplateStandIn,
    exec_api: ExecStandIn,
) -> Any:
    """Build settings with both sources' APIs configured, fast retries and a generous StackOne budget."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "amqp_url": amqp_url,
            "database_url": sqlite_url,
            "receiver": {"host": "127.0.0.1", "port": 0, "publish_timeout": 2.0},
            "stackone": {
                "base_url": stackone.url,
                "api_key": STACKONE_KEY,
                "timeout": 5.0,
                "rate_limit_per_minute": 600_000,
            },
            "broker": {"prefix": broker_prefix, "retry_delays": (0.2, 0.4, 0.8), "max_attempts": 5, "prefetch": 32},
            "worker": {"metrics_port": 0, "drain_timeout": 5.0, "sync_lease_seconds": 6.0},
            "reconcile": {"backoff_seconds": 0.01, "max_wait_seconds": 0.05, "max_attempts": 8},
            "sources": {
                "acme-security": {
                    "platform": "limeplate",
                    "secrets": [SECRET],
                    "accounts": [ACCOUNT],
                    "api_base_url": platform.url,
                    "api_key": PLATFORM_KEY,
                },
                "acme-sales": {
                    "platform": "exec",
                    "secrets": [SECRET],
                    "accounts": [ACCOUNT],
                    "api_base_url": exec_api.url,
                    "api_key": EXEC_KEY,
                },
            },
        }
        for key, value in overrides.items():
            values[key] = (
                {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
            )
        settings = load_settings(**values)
        remember_accounts(broker_prefix, [ACCOUNT], sources=settings.sources)
        return settings

    return build


def json_out(text: str) -> dict[str, Any]:
    """The JSON document ``reconcile --json`` printed."""
    parsed = orjson.loads(text[text.index("{") :])
    assert isinstance(parsed, dict)
    return parsed
