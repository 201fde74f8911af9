"""The command line people expect: global options anywhere, `python -m lmsbridge`, help, version, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsbridge import __version__
from lmsbridge.cli import _parser
from tests.cli.test_cli import write_config


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m lmsbridge ARGS`` as an operator would type it."""
    return subprocess.run(
        [sys.executable, "-m", "lmsbridge", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "order",
    [
        ("--config", "{c}", "--log-format", "json", "--log-level", "warning", "check", "--timeout", "5"),
        ("check", "--config", "{c}", "--log-format", "json", "--log-level", "warning", "--timeout", "5"),
        ("--log-level", "warning", "check", "--timeout", "5", "--config", "{c}", "--log-format", "json"),
    ],
)
def test_global_options_work_before_or_after_the_command(tmp_path: Path, amqp_url: str, order: tuple[str, ...]) -> None:
    """`lmsbridge --config F check` and `lmsbridge check --config F` (and a mix) read the same settings."""
    config = str(write_config(tmp_path, amqp_url, "cliorder"))
    (tmp_path / "db.sqlite").touch()  # an empty database: check fails for a SQLite file that is not there
    result = run(*(arg.format(c=config) for arg in order))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["broker"], answer["database"]) == (True, True)


def test_an_option_after_the_command_wins_over_the_same_option_before_it(tmp_path: Path, amqp_url: str) -> None:
    """A value given after the command is the one used (the broker URL of the second file is unreachable)."""
    good = write_config(tmp_path, amqp_url, "cliwins")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = write_config(bad_dir, "amqp://guest:guest@127.0.0.1:1/", "cliwins")
    result = run("--config", str(good), "check", "--timeout", "2", "--config", str(bad))
    assert result.returncode == 1
    assert json.loads(result.stdout)["broker"] is False


def test_nested_dlq_commands_take_global_options_after_them(tmp_path: Path, amqp_url: str, broker_prefix: str) -> None:
    """`lmsbridge dlq list --json --config F` works like `lmsbridge --config F dlq list --json`."""
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    result = run("dlq", "list", "--json", "--config", config, "--log-level", "error")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "file not found"),
        (b"amqp_url = [", "not valid TOML"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_a_missing_or_unreadable_settings_file_is_one_line_naming_it_exit_2(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    """A settings file that is missing, not UTF-8 or not TOML: one line on stderr naming the path, exit 2."""
    path = tmp_path / "settings.toml"
    if content is not None:
        path.write_bytes(content)
    for args in (("status", "--config", str(path)), ("--config", str(path), "run")):
        result = run(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0]
        assert expected in lines[0]


def test_a_directory_given_as_settings_file_is_refused_by_name(tmp_path: Path) -> None:
    """`--config DIR` says the path is a directory, in one line, exit 2."""
    result = run("--config", str(tmp_path), "status")
    assert result.returncode == 2
    assert result.stderr.strip() == f"lmsbridge: config: {tmp_path}: is a directory, not a settings file"


def test_version_and_help_list_the_exit_codes() -> None:
    """`--version` prints the installed version; `--help` lists the exit codes 0, 1, 2 and 130."""
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"lmsbridge {__version__}"
    helped = run("--help")
    assert helped.returncode == 0
    assert "exit codes:" in helped.stdout
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in helped.stdout


def test_an_unknown_option_is_a_usage_error_with_exit_2() -> None:
    """A misspelt option exits 2 with argparse's usage line, as the help promises."""
    result = run("run", "--confg", "x.toml")
    assert result.returncode == 2
    assert "unrecognized arguments: --confg" in result.stderr


def _all_parsers(parser: argparse.ArgumentParser, path: str = "lmsbridge") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _all_parsers(child, f"{path} {name}")
    return found


def test_every_command_and_option_has_help_text() -> None:
    """Every subcommand has a description and every option and argument a help text."""
    parsers = _all_parsers(_parser())
    assert {"lmsbridge run", "lmsbridge dlq replay", "lmsbridge demo"} <= {name for name, _ in parsers}
    for name, parser in parsers:
        assert parser.description, name
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), name
            else:
                assert action.help, f"{name}: {action.dest}"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_one_shot_command_stopped_by_a_signal_closes_up_and_says_so(
    tmp_path: Path, amqp_url: str, sig: signal.Signals, code: int
) -> None:
    """``migrate --wait`` waiting for a database that is down, sent SIGTERM (``timeout`` in a cron
    job, a pod deleted) or SIGHUP (its terminal closed): it stops as Ctrl-C stops it, its cleanup
    run, with one line naming the signal and exit 128 + the signal (before: killed where it stood,
    exit -15 / -1, not a word), and the password never shown."""
    config = write_config(tmp_path, amqp_url, "sigcli")
    down = {"LMSBRIDGE_DATABASE_URL": "postgresql+asyncpg://lmsbridge:pg-hunter2@127.0.0.1:1/lmsbridge"}
    with subprocess.Popen(
        [sys.executable, "-m", "lmsbridge", "--config", str(config), "migrate", "--wait", "60"],
        env={**os.environ, **down},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        waiting = proc.stderr.readline()  # the first "database.unreachable" line: it is waiting now
        proc.send_signal(sig)
        started = time.monotonic()
        _, rest = proc.communicate(timeout=15)
    assert "database.unreachable" in waiting
    assert proc.returncode == code, rest
    assert time.monotonic() - started < 5
    assert rest.strip().splitlines()[-1] == f"lmsbridge: stopped by {sig.name}"
    assert "hunter2" not in waiting + rest
