"""Signals a real `lmsbridge run` process may get from its operator or its terminal."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from lmsbridge.testing.stackone import StackOneStandIn
from tests.pipeline.conftest import ACCOUNT, SettingsFactory
from tests.pipeline.processes import one_webhook_then


async def test_a_hangup_stops_the_process_gracefully_naming_the_signal(
    make_settings: SettingsFactory, stackone: StackOneStandIn, tmp_path: Path
) -> None:
    """SIGHUP (the terminal that started it closed, or an operator's ``kill -HUP``) stops the
    process the way SIGTERM does: it logs which signal it got, drains and exits 0, instead of
    dying on the spot with requests and syncs cut off."""
    stackone.add_user(ACCOUNT, "hangup@acme.example")
    code, log_path = await one_webhook_then(make_settings(), stackone, tmp_path, "hangup@acme.example", signal.SIGHUP)
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert code == 0, events[-5:]
    stopping = [e for e in events if e["event"] == "lmsbridge.stopping"]
    assert [e.get("signal") for e in stopping] == ["SIGHUP"]
    assert events[-1]["event"] == "lmsbridge.stopped"
    assert len(stackone.assignments(ACCOUNT)) == 1
