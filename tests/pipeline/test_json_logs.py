"""One format per stream: a real `lmsbridge run --log-format json` writes only JSON lines to stderr."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from lmsbridge.testing.stackone import StackOneStandIn
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory
from tests.pipeline.processes import one_webhook_then


async def test_json_run_writes_one_json_object_per_line_including_library_lines(
    make_settings: SettingsFactory, stackone: StackOneStandIn, tmp_path: Path
) -> None:
    """Every stderr line of a JSON-format run (global options after the command) parses as a JSON
    object, the standard library's loggers (Alembic's migration lines) included, and no secret shows."""
    stackone.add_user(ACCOUNT, "json.logs@acme.example")
    settings = make_settings()
    code, log_path = await one_webhook_then(settings, stackone, tmp_path, "json.logs@acme.example", signal.SIGTERM)
    assert code == 0
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    assert all(isinstance(entry, dict) and "event" in entry and "level" in entry for entry in parsed)
    assert any(str(entry.get("logger", "")).startswith("alembic") for entry in parsed), "no library line seen"
    assert any(entry["event"] == "sync.pushed" for entry in parsed)
    assert settings.stackone.api_key.get_secret_value() not in text
    assert SECRET not in text
