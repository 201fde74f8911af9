"""Tests that need RabbitMQ or PostgreSQL fail, never skip, when the service is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("variable", "url", "test"),
    [
        ("LMSBRIDGE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/", "tests/broker/test_broker.py"),
        ("LMSBRIDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:1/test", "tests/storage/test_repository.py"),
    ],
)
def test_unreachable_service_fails_the_run(variable: str, url: str, test: str) -> None:
    """Pointed at a closed port, a service's tests error out with a clear message and none is skipped."""
    env = {**os.environ, variable: url}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", test, "-k", "not sqlite"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "unreachable" in result.stdout
    assert "skipped" not in result.stdout
