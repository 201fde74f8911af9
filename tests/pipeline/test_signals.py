"""Signals a real `lmsbridge run` process may get from its operator or its terminal."""

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


async def test_a_hangup_stops_the_process_gracefully_naming_the_signal(
    make_settings: SettingsFactory, stackone: StackOneStandIn, tmp_path: Path
) -> None:
    """SIGHUP (the terminal that started it closed, or an operator's ``kill -HUP``) stops the
    process the way SIGTERM does: it logs which signal it got, drains and exits 0, instead of
    dying on the spot with requests and syncs cut off."""
    stackone.add_user(ACCOUNT, "hangup@acme.example")
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
            assignment = exec_assignment("hup-1", "hangup@acme.example", scenario="discovery-call")
            status, body = await sender.post("acme-sales", exec_event("assignment.created", assignment))
            assert status == 202, body
            for _ in range(200):
                if stackone.assignments(ACCOUNT):
                    break
                await asyncio.sleep(0.1)
            process.send_signal(signal.SIGHUP)
            code = await asyncio.to_thread(process.wait, 60)
        finally:
            process.kill()
            process.wait()
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert code == 0, events[-5:]
    stopping = [e for e in events if e["event"] == "lmsbridge.stopping"]
    assert [e.get("signal") for e in stopping] == ["SIGHUP"]
    assert events[-1]["event"] == "lmsbridge.stopped"
    assert len(stackone.assignments(ACCOUNT)) == 1
