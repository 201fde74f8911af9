"""One format per stream: a real `lmsbridge run --log-format json` writes only JSON lines to stderr."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory
from tests.pipeline.test_resilience import free_port, wait_ready, write_config


async def test_json_run_writes_one_json_object_per_line_including_library_lines(
    make_settings: SettingsFactory, stackone: StackOneStandIn, tmp_path: Path
) -> None:
    """Every stderr line of a JSON-format run (global options after the command) parses as a JSON
    object, the standard library's loggers (Alembic's migration lines) included, and no secret shows."""
    stackone.add_user(ACCOUNT, "json.logs@acme.example")
    settings = make_settings()
    port = free_port()
    config = tmp_path / "run.toml"
    write_config(config, settings, port)
    command = [sys.executable, "-m", "lmsbridge", "run", "--config", str(config), "--log-format", "json"]
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            sender = WebhookSender(f"http://127.0.0.1:{port}", SECRET)
            assignment = exec_assignment("json-1", "json.logs@acme.example", scenario="discovery-call")
            status, body = await sender.post("acme-sales", exec_event("assignment.created", assignment))
            assert status == 202, body
            for _ in range(200):
                if stackone.assignments(ACCOUNT):
                    break
                await asyncio.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 60) == 0
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    assert all(isinstance(entry, dict) and "event" in entry and "level" in entry for entry in parsed)
    assert any(str(entry.get("logger", "")).startswith("alembic") for entry in parsed), "no library line seen"
    assert any(entry["event"] == "sync.pushed" for entry in parsed)
    assert settings.stackone.api_key.get_secret_value() not in text
    assert SECRET not in text
