"""A real `lmsbridge run` process with JSON logs, given one webhook, then told to stop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from lmsbridge.settings import Settings
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import ACCOUNT, SECRET
from tests.pipeline.test_resilience import free_port, wait_ready, write_config


async def one_webhook_then(
    settings: Settings, stackone: StackOneStandIn, tmp_path: Path, email: str, stop: signal.Signals
) -> tuple[int, Path]:
    """Start `lmsbridge run --log-format json` (global options after the command), post one Exec
    assignment for ``email``, wait until the LMS has it, send ``stop``; returns the exit code and
    the file holding the process's stderr."""
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
            assignment = exec_assignment(f"as-{email}", email, scenario="discovery-call")
            status, body = await sender.post("acme-sales", exec_event("assignment.created", assignment))
            assert status == 202, body
            for _ in range(200):
                if stackone.assignments(ACCOUNT):
                    break
                await asyncio.sleep(0.1)
            process.send_signal(stop)
            return await asyncio.to_thread(process.wait, 60), log_path
        finally:
            process.kill()
            process.wait()
