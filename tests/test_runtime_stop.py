"""Stopping: the runtime's background loops (``runtime.cancel_all``), and a process told to stop while it starts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmsbridge.runtime import cancel_all
from tests.cli.test_cli import write_config


async def test_a_loop_that_swallows_its_cancellation_still_ends_when_stopped() -> None:
    """A background loop whose step turns the CancelledError into an error it suppresses (as a
    library call may) goes back to its sleep; stopping cancels it again and it ends, where awaiting
    it once cancelled hung for ever. A well-behaved loop ends at the first cancellation."""
    swallowed = 0

    async def step() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            swallowed += 1
            raise RuntimeError("the channel closed") from None  # a library's own error

    async def stubborn() -> None:
        while True:
            with contextlib.suppress(Exception):
                await step()
            await asyncio.sleep(15)

    async def plain() -> None:
        while True:
            await asyncio.sleep(15)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(plain())]
    await asyncio.sleep(0.05)  # both are waiting inside their loops
    await asyncio.wait_for(cancel_all(tasks, every=0.1), timeout=5)
    assert all(task.done() for task in tasks)
    assert swallowed == 1  # the first cancellation was swallowed; the second ended it


def test_sigterm_while_the_worker_waits_for_rabbitmq_stops_it_at_once(tmp_path: Path) -> None:
    """A worker still starting (RabbitMQ unreachable: it waits up to a minute for it) gets SIGTERM:
    it stops within seconds with exit code 0, instead of finishing the wait first and then
    ending with "RabbitMQ is unreachable"."""
    config = write_config(tmp_path, "amqp://guest:guest@127.0.0.1:1/", "sigstart")
    log = tmp_path / "worker.log"
    args = [sys.executable, "-m", "lmsbridge", "--config", str(config), "--log-format", "json", "worker"]
    with log.open("wb") as stderr:
        worker = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while b"broker.unreachable" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"broker.unreachable" in log.read_bytes()  # it is waiting for RabbitMQ
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        worker.kill()
        worker.wait()
    assert code == 0, log.read_text()
    assert b"lmsbridge.stopped" in log.read_bytes()
