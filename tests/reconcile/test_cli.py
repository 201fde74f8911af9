"""``lmsbridge reconcile`` as a command: exit codes, JSON on stdout, one line naming the key for bad settings."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from lmsbridge.testing.exec import ExecStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import exec_assignment
from tests.conftest import remember_accounts
from tests.pipeline.conftest import SECRET, STACKONE_KEY
from tests.reconcile.conftest import ACCOUNT, EXEC_KEY


def config(tmp: Path, amqp_url: str, sqlite_url: str, prefix: str, stackone: str, exec_url: str) -> Path:
    """A settings file with one Exec source whose API is the stand-in."""
    path = tmp / "lmsbridge.toml"
    path.write_text(
        f"""
amqp_url = "{amqp_url}"
database_url = "{sqlite_url}"
[stackone]
base_url = "{stackone}"
api_key = "{STACKONE_KEY}"
[broker]
prefix = "{prefix}"
[sources.acme-sales]
platform = "exec"
secrets = ["{SECRET}"]
accounts = ["{ACCOUNT}"]
api_base_url = "{exec_url}"
api_key = "{EXEC_KEY}"
"""
    )
    return path


async def lmsbridge(*args: str) -> tuple[int, str, str]:
    """Run the ``lmsbridge`` command in a child process; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lmsbridge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reconcile_command_exit_codes_and_json(
    tmp_path: Path,
    amqp_url: str,
    sqlite_url: str,
    broker_prefix: str,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
) -> None:
    """A dry run over a reachable Exec exits 0 with the figures as JSON; Exec refusing the key
    exits 1 saying so; an unknown source exits 2 with one line naming it."""
    remember_accounts(broker_prefix, [ACCOUNT], sources=["acme-sales"])
    for i in range(3):
        exec_api.put(exec_assignment(f"a{i}", f"rep{i}@acme.example", status="completed", best_score=90.0))
    cfg = str(config(tmp_path, amqp_url, sqlite_url, broker_prefix, stackone.url, exec_api.url))
    assert (await lmsbridge("--config", cfg, "migrate"))[0] == 0

    code, out, _ = await lmsbridge("--config", cfg, "--log-level", "error", "reconcile", "--dry-run", "--json")
    assert code == 0
    report = orjson.loads(out)["sources"]["acme-sales"]
    assert (report["drift"]["record_missing"], report["events_queued"], report["platform_calls"]) == (3, 0, 1)

    code, out, _ = await lmsbridge("--config", cfg, "--log-level", "error", "reconcile", "--source", "acme-sales")
    assert code == 0
    assert "acme-sales" in out

    exec_api.fail_next(401, times=10)
    code, _, err = await lmsbridge("--config", cfg, "--log-level", "error", "reconcile")
    assert code == 1
    assert "refused the API key" in err

    code, _, err = await lmsbridge("--config", cfg, "reconcile", "--source", "nope")
    assert code == 2
    assert err.strip().splitlines()[-1] == "lmsbridge: config: sources.nope: no such source"


async def test_reconcile_lms_draws_a_progress_bar_on_a_terminal(
    tmp_path: Path,
    amqp_url: str,
    sqlite_url: str,
    broker_prefix: str,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
) -> None:
    """``reconcile --lms`` on a terminal shows a progress bar naming the account and the LMS list it reads
    (on stderr, gone when done); with ``--json`` (for scripts) nothing is drawn."""
    remember_accounts(broker_prefix, [ACCOUNT], sources=["acme-sales"])
    cfg = str(config(tmp_path, amqp_url, sqlite_url, broker_prefix, stackone.url, exec_api.url))
    assert (await lmsbridge("--config", cfg, "migrate"))[0] == 0
    args = ["--config", cfg, "--log-level", "error", "reconcile", "--lms", "--dry-run"]
    code, terminal = await on_terminal(*args)
    assert code == 0, terminal
    assert f"{ACCOUNT}: LMS assignments" in terminal
    assert f"{ACCOUNT}: LMS completions" in terminal
    code, terminal = await on_terminal(*args, "--json")
    assert code == 0
    assert "LMS assignments" not in terminal


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--account", ACCOUNT], "--account needs --lms"),
        (["--lms", "--source", "acme-sales"], "--source does not apply with --lms"),
    ],
)
async def test_an_option_that_does_not_apply_is_refused_and_nothing_is_read(
    tmp_path: Path,
    amqp_url: str,
    sqlite_url: str,
    broker_prefix: str,
    stackone: StackOneStandIn,
    exec_api: ExecStandIn,
    options: list[str],
    said: str,
) -> None:
    """``reconcile --account A`` without ``--lms`` (before: a whole platform pass of every source,
    queueing its repairs) and ``--lms --source S`` (before: every account's LMS) exit 2 with one
    line saying which option does not apply, and call neither the platform nor StackOne."""
    remember_accounts(broker_prefix, [ACCOUNT], sources=["acme-sales"])
    cfg = str(config(tmp_path, amqp_url, sqlite_url, broker_prefix, stackone.url, exec_api.url))
    assert (await lmsbridge("--config", cfg, "migrate"))[0] == 0
    code, out, err = await lmsbridge("--config", cfg, "--log-level", "error", "reconcile", *options)
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert line.startswith(f"lmsbridge: reconcile: {said}")
    assert (exec_api.list_calls, len(stackone.requests)) == (0, 0)


async def on_terminal(*args: str) -> tuple[int, str]:
    """Run ``lmsbridge`` with stderr on a pseudo-terminal; (exit code, what the terminal received)."""
    import pty

    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lmsbridge",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "200", "TERM": "xterm"},
    )
    os.close(follower)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = asyncio.get_running_loop().run_in_executor(None, drain)
    code = await proc.wait()
    await reader
    os.close(leader)
    return code, b"".join(chunks).decode(errors="replace")
