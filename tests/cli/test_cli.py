"""The command line as an operator uses it: config errors, the probe, status and the DLQ."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import pytest
from alembic.script import ScriptDirectory

from lmsbridge.broker import Broker, Names
from lmsbridge.broker.codec import SyncTask
from lmsbridge.settings import BrokerSettings
from lmsbridge.storage.migrate import alembic_config
from tests.conftest import remember_accounts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def lmsbridge(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the command line; ``stdin`` is all it can read (by default nothing: end of file at once)."""
    return subprocess.run(
        [sys.executable, "-m", "lmsbridge.cli", *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, amqp_url: str, prefix: str, extra: str = "") -> Path:
    path = tmp_path / "lmsbridge.toml"
    path.write_text(
        f"""
amqp_url = "{amqp_url}"
database_url = "sqlite+aiosqlite:///{tmp_path / "db.sqlite"}"
[stackone]
api_key = "stackone-secret-value"
[broker]
prefix = "{prefix}"
[sources.acme]
platform = "exec"
secrets = ["{SECRET}"]
accounts = ["acc-1"]
{extra}
"""
    )
    return path


def test_invalid_setting_stops_with_one_line_naming_the_key(tmp_path: Path) -> None:
    """A bad value stops start-up with one line that names the key and shows no secret."""
    config = write_config(tmp_path, "amqp://guest:guest@127.0.0.1:5672/", "x", extra="tolerance_seconds = -5")
    result = lmsbridge("--config", str(config), "serve")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "sources.acme.tolerance_seconds" in lines[0]
    assert "stackone-secret-value" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [("LMSBRIDGE_SOURCES", '{"acme": whsec_EnvOnlySecret1}'), ("LMSBRIDGE_SOURCES__ACME__SECRETS", "whsec_EnvOnly2")],
    ids=["table", "list"],
)
def test_a_list_or_table_in_the_environment_that_is_not_json_stops_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    """An environment variable for a list or table whose value is not JSON stops start-up with one
    line (exit 2) naming the setting, never its value (before: a pydantic-settings traceback, exit 1)."""
    config = write_config(tmp_path, "amqp://guest:guest@127.0.0.1:5672/", "x")
    result = lmsbridge("--config", str(config), "check", env={name: value})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert 'error parsing value for field "sources"' in line
    assert "EnvOnly" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("dlq", "list", "--limit", "-5"),
        ("check", "--timeout", "-1"),
        ("check", "--timeout", "nan"),
        ("migrate", "--wait", "inf"),
        ("demo", "--events", "0"),
    ],
    ids=["negative-limit", "negative-timeout", "nan-timeout", "infinite-wait", "no-events"],
)
def test_a_number_out_of_range_is_a_usage_error_naming_the_option(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A count below 1 or a number of seconds that is negative or not finite is refused as a usage
    error (exit 2, the option named, no traceback) before anything runs (before: `check --timeout nan`
    ended in a ValueError traceback, `--timeout -1` reported both services down, and `dlq list
    --limit -5` printed an empty table while dead letters waited)."""
    config = str(write_config(tmp_path, "amqp://guest:guest@127.0.0.1:1/", "cli-range"))
    result = lmsbridge("--config", config, *args)
    assert result.returncode == 2
    assert f"argument {args[-2]}: {args[-1]}: must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """LMSBRIDGE_RECEIVER__PORT overrides the file, and a bad one is named by its key."""
    config = write_config(tmp_path, "amqp://guest:guest@127.0.0.1:5672/", "x")
    result = lmsbridge("--config", str(config), "serve", env={"LMSBRIDGE_RECEIVER__PORT": "not-a-port"})
    assert result.returncode == 2
    assert "receiver.port" in result.stderr


def test_check_exits_zero_when_services_answer_and_one_when_not(tmp_path: Path, amqp_url: str) -> None:
    """`lmsbridge check` is 0 with RabbitMQ and the database up, 1 with the broker unreachable. It says
    where the schema is, without failing for it: a database never migrated, then current."""
    config = write_config(tmp_path, amqp_url, "x")
    sqlite3.connect(tmp_path / "db.sqlite").close()  # an empty database
    bare = lmsbridge("--config", str(config), "check")
    assert bare.returncode == 0
    assert json.loads(bare.stdout) == {
        "broker": True,
        "database": True,
        "schema": "at revision none: run 'lmsbridge migrate'",
    }
    assert lmsbridge("--config", str(config), "migrate").returncode == 0
    ready = lmsbridge("--config", str(config), "check")
    assert ready.returncode == 0
    assert json.loads(ready.stdout) == {"broker": True, "database": True, "schema": "current"}
    down = lmsbridge(
        "--config",
        str(config),
        "check",
        "--timeout",
        "2",
        env={"LMSBRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
    )
    assert down.returncode == 1
    assert json.loads(down.stdout) == {"broker": False, "database": True, "schema": "current"}


def test_check_on_a_sqlite_file_that_does_not_exist_says_so_and_creates_nothing(tmp_path: Path, amqp_url: str) -> None:
    """`lmsbridge check` with `database_url` naming a SQLite file that is not there (a typo, a
    volume not mounted) exits 1 saying the file does not exist, and leaves no file behind (before:
    it created an empty database and exited 0, the database "answering")."""
    config = write_config(tmp_path, amqp_url, "x")
    missing = tmp_path / "missing.db"
    result = lmsbridge(
        "--config", str(config), "check", env={"LMSBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{missing}"}
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout) == {"broker": True, "database": False, "schema": None}
    assert result.stderr.strip().splitlines() == [f"lmsbridge: database: the SQLite file {missing} does not exist"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lmsbridge.toml"]


async def dead_letter(
    amqp_url: str,
    prefix: str,
    record_id: int,
    error: str = "provider rejected due_date",
    reason: str = "stackone_422",
) -> None:
    """Put a sync task for ``record_id`` in the dead-letter queue, as the worker would after a 422."""
    remember_accounts(prefix, ["acc-1"], sources=["acme"])
    broker = Broker(amqp_url, BrokerSettings(prefix=prefix), ["acc-1"], name="cli-test")
    await broker.start(wait=10)
    await broker.publish_sync(SyncTask(record_id, "acc-1"), correlation_id="c", received_at=1.0)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Names(prefix).sync("acc-1"))
        held = await queue.get(no_ack=False, timeout=5)
        await broker.publish_dead(held, reason=reason, error=error)
        await held.ack()
    await broker.close()


async def test_dlq_commands_list_show_and_replay(tmp_path: Path, amqp_url: str, broker_prefix: str) -> None:
    """`dlq list --json` shows a dead letter's reason and its tries (one: taken once, then dead), the
    table a tries column; `dlq replay ID` sends it back to its queue."""
    await dead_letter(amqp_url, broker_prefix, 5)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    listed = lmsbridge("--config", config, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["message_id"], row["reason"], row["tries"]) == ("sync:5:acc-1", "stackone_422", 1)
    table = lmsbridge("--config", config, "dlq", "list", env={"COLUMNS": "200"}).stdout.splitlines()
    [header] = [line for line in table if "message id" in line]
    [line] = [line for line in table if "sync:5:acc-1" in line]
    assert [cell.strip() for cell in re.split("[│┃]", header)[1:-1]][3] == "tries"
    assert [cell.strip() for cell in re.split("[│┃]", line)[1:-1]][3] == "1"
    shown = lmsbridge("--config", config, "dlq", "show", "sync:5:acc-1")
    assert "provider rejected due_date" in shown.stdout
    assert lmsbridge("--config", config, "dlq", "replay", "sync:5:acc-1").returncode == 0
    assert json.loads(lmsbridge("--config", config, "dlq", "list", "--json").stdout) == []
    assert lmsbridge("--config", config, "dlq", "replay", "no-such-id").returncode == 1


async def test_a_replay_stopped_by_sigterm_says_how_many_went_back_and_loses_none(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq replay --all` of 20,000 dead letters, sent SIGTERM once 2,000 are back in their queue:
    exit 143 with a line saying how many went back before it stopped (before: no count at all, so
    the operator could not tell what a second replay would send again); those are in the queue and
    every other one is still dead."""
    remember_accounts(broker_prefix, ["acc-1"], sources=["acme"])
    broker = Broker(amqp_url, BrokerSettings(prefix=broker_prefix), ["acc-1"], name="cli-test")
    await broker.start(wait=10)
    total = 20_000
    for start in range(0, total, 1000):
        await asyncio.gather(
            *(
                broker.publish_dead_sync(
                    SyncTask(i, "acc-1"), correlation_id="c", received_at=1.0, attempt=3, reason="r", error="e"
                )
                for i in range(start, start + 1000)
            )
        )
    await broker.close()
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lmsbridge.cli", "--config", config, "dlq", "replay", "--all",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    names = Names(broker_prefix)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()

        async def depth(queue: str) -> int:
            return int((await channel.declare_queue(queue, passive=True)).declaration_result.message_count or 0)

        async with asyncio.timeout(30):
            while await depth(names.sync("acc-1")) < 2000:  # ten replay windows published
                await asyncio.sleep(0.005)
        replay.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(replay.communicate(), 30)
        said = err.decode().strip().splitlines()
        assert replay.returncode == 143, said
        [sent] = [int(line.split()[2]) for line in said if line.startswith("lmsbridge: replayed ")]
        assert f"lmsbridge: replayed {sent} message(s) before it stopped" in said[0]
        await asyncio.sleep(1)  # the dead copies the replay held unacked go back as its channel closes
        back, dead = await depth(names.sync("acc-1")), await depth(names.dead)
    assert 0 < sent < total
    assert sent <= back  # each counted is in its queue (one confirmed but not yet acked is in both)
    assert back + dead >= total  # none lost


async def test_dlq_replay_all_of_one_reason_sends_those_back_and_leaves_the_rest_dead(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq list --reason stackone_422` lists the two dead letters of that reason (the first of them
    with `--limit 1`); `dlq replay --all --reason stackone_422` (the provider's data fixed) sends
    those two back to their queue, and the one that died of 503s stays dead and is listed; exit 0,
    saying how many of each. Before, `--reason` was no option (exit 2), and `--all` sent back every
    dead letter, those whose cause was not mended too. `--reason` without `--all` is refused."""
    await dead_letter(amqp_url, broker_prefix, 5)
    await dead_letter(amqp_url, broker_prefix, 6, error="HTTP 503", reason="retry_age_exceeded")
    await dead_letter(amqp_url, broker_prefix, 7)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))

    def ids_listed(*options: str) -> list[str]:
        out = lmsbridge("--config", config, "dlq", "list", "--json", *options)
        assert out.returncode == 0, out.stderr
        return [row["message_id"] for row in json.loads(out.stdout)]

    assert ids_listed("--reason", "stackone_422") == ["sync:5:acc-1", "sync:7:acc-1"]
    assert ids_listed("--reason", "stackone_422", "--limit", "1") == ["sync:5:acc-1"]
    assert ids_listed() == ["sync:5:acc-1", "sync:6:acc-1", "sync:7:acc-1"]  # listing took nothing out
    result = lmsbridge("--config", config, "dlq", "replay", "--all", "--reason", "stackone_422")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "lmsbridge: replayed 2 message(s)",
        "lmsbridge: left 1 message(s) of other reasons than stackone_422 in the dead-letter queue",
    ]
    listed = json.loads(lmsbridge("--config", config, "dlq", "list", "--json").stdout)
    assert [(row["message_id"], row["reason"]) for row in listed] == [("sync:6:acc-1", "retry_age_exceeded")]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(Names(broker_prefix).sync("acc-1"), passive=True)
        assert queue.declaration_result.message_count == 2
    alone = lmsbridge("--config", config, "dlq", "replay", "sync:6:acc-1", "--reason", "stackone_422")
    assert alone.returncode == 2
    assert "--reason goes with --all" in alone.stderr


async def test_dlq_list_prints_errors_with_brackets_as_they_are(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """A dead letter whose error holds brackets (a provider's "field [due_date] invalid", or
    "[/x]") is listed in the table as it is, and the command exits 0 (before: rich read them as
    markup: "[due_date]" vanished from the table, and "[/x]" ended `dlq list` with a MarkupError
    traceback)."""
    error = "field [due_date] invalid; closing [/x] tag"
    await dead_letter(amqp_url, broker_prefix, 6, error=error)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    listed = lmsbridge("--config", config, "dlq", "list", env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    assert error in listed.stdout


async def test_dlq_replay_of_a_dead_letter_no_queue_takes_keeps_it_and_says_why(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq replay --all` of a sync task whose queue is gone (its account taken out of the settings):
    exit 1 and one line naming the queue and why, no traceback; the dead letter is still listed."""
    await dead_letter(amqp_url, broker_prefix, 5)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await (await connection.channel()).queue_delete(Names(broker_prefix).sync("acc-1"))
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    result = lmsbridge("--config", config, "dlq", "replay", "--all")
    assert result.returncode == 1
    assert result.stdout.strip() == "lmsbridge: replayed 0 message(s)"
    assert result.stderr.startswith(
        "lmsbridge: 1 message(s) for sync.acc-1 left in the dead-letter queue: no queue takes them"
    )
    assert "Traceback" not in result.stderr
    listed = json.loads(lmsbridge("--config", config, "dlq", "list", "--json").stdout)
    assert [(row["message_id"], row["reason"]) for row in listed] == [("sync:5:acc-1", "stackone_422")]


async def test_dlq_replay_keeps_dead_what_an_account_no_longer_in_the_settings_would_strand(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq replay --all` of a sync task for an account taken out of the settings whose queue still
    exists: the task stays dead (exit 1, the line naming its queue), not sent to a queue no worker
    consumes (before: "replayed 1", exit 0, and the task sat in that queue for good)."""
    await dead_letter(amqp_url, broker_prefix, 5)
    path = write_config(tmp_path, amqp_url, broker_prefix)
    path.write_text(path.read_text().replace('accounts = ["acc-1"]', 'accounts = ["acc-2"]'))
    result = lmsbridge("--config", str(path), "dlq", "replay", "--all")
    assert result.returncode == 1
    assert result.stdout.strip() == "lmsbridge: replayed 0 message(s)"
    assert "1 message(s) for sync.acc-1 left in the dead-letter queue" in result.stderr
    listed = json.loads(lmsbridge("--config", str(path), "dlq", "list", "--json").stdout)
    assert [row["message_id"] for row in listed] == ["sync:5:acc-1"]
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(Names(broker_prefix).sync("acc-1"), passive=True)
        assert queue.declaration_result.message_count == 0


async def test_dlq_commands_say_when_another_client_holds_dead_letters(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """While another client consumes the dead-letter queue and holds its messages unacknowledged (a
    `dlq` command still running elsewhere), `list`, `replay --all` and `purge` say so on stderr, and
    `replay --all` and `purge` exit 1 (before: "replayed 0" or "purged 0" and exit 0, an empty list:
    as if there were nothing dead). Once it lets them go, they are all there."""
    for record_id in (1, 2, 3):
        await dead_letter(amqp_url, broker_prefix, record_id)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    holder = await aio_pika.connect(amqp_url)
    try:
        channel = await holder.channel()
        await channel.set_qos(prefetch_count=10)
        held: asyncio.Queue[object] = asyncio.Queue()
        await (await channel.get_queue(Names(broker_prefix).dead)).consume(held.put)
        for _ in range(3):
            await asyncio.wait_for(held.get(), 5)
        listed = lmsbridge("--config", config, "dlq", "list", "--json")
        replayed = lmsbridge("--config", config, "dlq", "replay", "--all")
        purged = lmsbridge("--config", config, "dlq", "purge", "--yes")
    finally:
        await holder.close()
    assert listed.returncode == 0
    assert json.loads(listed.stdout) == []
    for result in (listed, replayed, purged):
        assert "1 other consumer(s) of" in result.stderr, result.stderr
    assert (replayed.returncode, purged.returncode) == (1, 1)
    after = json.loads(lmsbridge("--config", config, "dlq", "list", "--json").stdout)
    assert sorted(row["message_id"] for row in after) == ["sync:1:acc-1", "sync:2:acc-1", "sync:3:acc-1"]


async def test_dlq_purge_asks_and_without_an_answer_purges_nothing(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """`dlq purge` asks first: "n" purges nothing (exit 1); no answer at all (stdin closed, as in a
    script) is one line saying to pass --yes (exit 2), not a traceback; --yes purges."""
    await dead_letter(amqp_url, broker_prefix, 7)
    config = str(write_config(tmp_path, amqp_url, broker_prefix))

    def dead() -> list[str]:
        listed = lmsbridge("--config", config, "dlq", "list", "--json")
        return [row["message_id"] for row in json.loads(listed.stdout)]

    declined = lmsbridge("--config", config, "dlq", "purge", stdin="n\n")
    assert (declined.returncode, declined.stderr.strip()) == (1, "lmsbridge: dlq purge: nothing purged")
    closed = lmsbridge("--config", config, "dlq", "purge")
    assert closed.returncode == 2
    assert closed.stderr.strip().splitlines() == [
        "lmsbridge: dlq purge: no answer on stdin (not a terminal?): pass --yes to purge without asking"
    ]
    assert dead() == ["sync:7:acc-1"]
    purged = lmsbridge("--config", config, "dlq", "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 message(s)" in purged.stdout
    assert dead() == []


@pytest.mark.usefixtures("broker_prefix")
def test_status_json_reports_ledger_accounts_and_queues(tmp_path: Path, amqp_url: str) -> None:
    """`status --json` has the ledger, every account, queue depths and the rate budget."""
    config = str(write_config(tmp_path, amqp_url, "statusx"))
    assert lmsbridge("--config", config, "migrate").returncode == 0
    result = lmsbridge("--config", config, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"ledger", "accounts", "queues", "parked_reasons", "dead_reasons", "rate_budget"}
    assert data["accounts"]["acc-1"]["paused"] is False
    assert data["rate_budget"]["per_minute"] == 1000


def test_status_prints_a_pause_reason_with_brackets_as_it_is(tmp_path: Path, amqp_url: str) -> None:
    """An account paused with StackOne's message quoting brackets ("[/x]", "[due_date]") is shown in
    the `status` table as it is (before: rich read it as markup, and `status` ended in a MarkupError
    traceback)."""
    config = str(write_config(tmp_path, amqp_url, "statusmarkup"))
    assert lmsbridge("--config", config, "migrate").returncode == 0
    reason = "StackOne probe: HTTP 403: key [/x] lacks [due_date] scope"
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("INSERT INTO accounts (account, paused, reason, status) VALUES ('acc-1', 1, ?, 403)", (reason,))
    result = lmsbridge("--config", config, "status", env={"COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    assert f"yes: {reason}" in result.stdout


async def test_status_names_queues_stranded_by_an_account_or_source_taken_out_of_the_settings(
    tmp_path: Path, amqp_url: str, broker_prefix: str
) -> None:
    """An account and a source taken out of the settings while their queues still hold messages:
    no worker consumes those queues any more. `status` names each with its depth (JSON
    ``stranded_queues``, and a line under the table); the configured ones are not listed there."""
    config = str(write_config(tmp_path, amqp_url, broker_prefix))
    assert lmsbridge("--config", config, "migrate").returncode == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as db:  # what the database has from before
        for rid, source, account in ((1, "acme", "acc-gone"), (2, "old-source", "acc-1")):
            db.execute(
                "INSERT INTO records (id, source, assignment_id, person_key, platform, learning_object_ref, title,"
                " rank, version, received_at, updated_at) VALUES (?, ?, 'a', 'p', 'exec', ?, 't', 0, 1,"
                " '2026-12-01 00:00:00', '2026-12-01 00:00:00')",
                (rid, source, f"lo-{rid}"),
            )
            db.execute(
                "INSERT INTO sync_state (record_id, account, status, assignment_created, completion_created,"
                " attempts, updated_at) VALUES (?, ?, 'pending', 0, 0, 0, '2026-12-01 00:00:00')",
                (rid, account),
            )
    names = Names(broker_prefix)
    remember_accounts(broker_prefix, ["acc-gone"], sources=["old-source"])
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue, count in ((names.sync("acc-gone"), 2), (names.intake("old-source"), 1)):
            await channel.declare_queue(queue, durable=True)
            for _ in range(count):
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)
    result = lmsbridge("--config", config, "status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stranded_queues"] == {names.sync("acc-gone"): 2, names.intake("old-source"): 1}
    table = lmsbridge("--config", config, "status", env={"COLUMNS": "200"})
    assert f"{names.sync('acc-gone')} holds 2 message(s) for an account or source no longer in the settings" in (
        table.stdout
    )


def test_commands_that_read_the_database_say_to_migrate_it_first(tmp_path: Path, amqp_url: str) -> None:
    """`status` and `reconcile --lms` on a database never migrated exit 1 with one line naming the
    schema and `lmsbridge migrate`, not a driver error; a schema newer than this version is named as such."""
    config = str(write_config(tmp_path, amqp_url, "schemax"))
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    sqlite3.connect(tmp_path / "db.sqlite").close()  # an empty database
    for command in (["status"], ["reconcile", "--lms", "--dry-run"]):
        result = lmsbridge("--config", config, *command)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            f"lmsbridge: database: the schema is at revision none, this lmsbridge needs {head}: run 'lmsbridge migrate'"
        )
        assert "alembic" not in result.stderr
    assert lmsbridge("--config", config, "migrate").returncode == 0
    assert lmsbridge("--config", config, "status").returncode == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    result = lmsbridge("--config", config, "status")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"lmsbridge: the database is at revision 0099, newer than this lmsbridge (newest it knows: {head}): "
        "run the newer version"
    )


def test_commands_that_read_the_database_create_no_sqlite_file(tmp_path: Path, amqp_url: str) -> None:
    """`status`, `reconcile` and `reconcile --lms` run where `database_url`'s relative SQLite file is
    not (another directory) exit 1 with one line naming the absolute path and `lmsbridge migrate`,
    and leave no file behind (before: each created an empty database there, and said to migrate it)."""
    platform = 'api_base_url = "http://127.0.0.1:9"\napi_key = "platform-key"'
    config = str(write_config(tmp_path, amqp_url, "nofile", extra=platform))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"LMSBRIDGE_DATABASE_URL": "sqlite+aiosqlite:///relative.db"}
    for command in (["status"], ["reconcile", "--dry-run"], ["reconcile", "--lms", "--dry-run"]):
        result = lmsbridge("--config", config, *command, env=env, cwd=elsewhere)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.strip().splitlines()[-1] == (
            f"lmsbridge: database: the SQLite file {elsewhere / 'relative.db'} does not exist: "
            "run 'lmsbridge migrate' to create it, or set database_url to the worker's"
        )
    assert list(elsewhere.iterdir()) == []


def test_a_database_a_newer_lmsbridge_migrated_is_named_by_migrate_worker_and_check(
    tmp_path: Path, amqp_url: str
) -> None:
    """A database at a revision this lmsbridge does not know (a newer version migrated it):
    `migrate` and `worker` exit 1 with one line saying so and what to run, no Alembic traceback;
    `check` (the database answers) exits 0 and says the same instead of advising `lmsbridge
    migrate`, the very command that fails."""
    config = str(write_config(tmp_path, amqp_url, "newerx"))
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert lmsbridge("--config", config, "migrate").returncode == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    said = (
        f"the database is at revision 0099, newer than this lmsbridge (newest it knows: {head}): run the newer version"
    )
    for command in ("migrate", "worker"):
        result = lmsbridge("--config", config, command, env={"LMSBRIDGE_WORKER__METRICS_PORT": "0"})
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"lmsbridge: {said}", command
        assert "Traceback" not in result.stderr, command
    check = lmsbridge("--config", config, "check")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout) == {"broker": True, "database": True, "schema": said}


@pytest.mark.parametrize(
    ("command", "setting", "what"),
    [("serve", "RECEIVER__PORT", "receiver"), ("worker", "WORKER__METRICS_PORT", "worker metrics")],
)
def test_a_port_already_taken_exits_at_once_with_one_line(
    tmp_path: Path, amqp_url: str, command: str, setting: str, what: str
) -> None:
    """`serve` whose port, or `worker` whose metrics port, another program holds exits 1 within
    seconds, saying which address and why: no traceback, and no process left hanging on its
    broker connection at exit."""
    config = str(write_config(tmp_path, amqp_url, "portx"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = lmsbridge(
            "--config",
            config,
            command,
            env={"LMSBRIDGE_RECEIVER__HOST": "127.0.0.1", f"LMSBRIDGE_{setting}": str(port)},
        )
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert result.stderr.strip().splitlines()[-1] == (
        f"lmsbridge: {what}: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("port", "where"), [("1", "127.0.0.1:1"), ("notaport", "127.0.0.1 (its port in the URL is not a number)")]
)
def test_demo_without_rabbitmq_names_where_it_looked_and_not_the_password(
    tmp_path: Path, port: str, where: str
) -> None:
    """`lmsbridge demo` with nothing listening at the broker's address exits 1 naming that host and
    port, without the URL's password and without a traceback (before, for a port that is not a
    number: a ValueError traceback from naming it)."""
    result = lmsbridge("demo", "--amqp-url", f"amqp://guest:demo-hunter2@127.0.0.1:{port}/", cwd=tmp_path)
    assert result.returncode == 1
    said = " ".join((result.stdout + result.stderr).split())
    assert f"lmsbridge demo: cannot start: RabbitMQ is unreachable (is RabbitMQ running on {where}?)" in said
    assert "hunter2" not in said
    assert "Traceback" not in said


def test_migrate_and_lms_reconcile_with_the_database_down_say_so_in_one_line(tmp_path: Path, amqp_url: str) -> None:
    """Nothing listening at the database's address: `migrate` exits 1 with one line naming the
    fault (no traceback, no password) and `migrate --wait` tries again before giving up;
    `reconcile --lms` prints each stopped account's whole reason under its table."""
    config = str(write_config(tmp_path, amqp_url, "downx"))
    down = {"LMSBRIDGE_DATABASE_URL": "postgresql+asyncpg://lmsbridge:pg-hunter2@127.0.0.1:1/lmsbridge"}
    result = lmsbridge("--config", config, "migrate", env=down)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["lmsbridge: database: unreachable (ConnectionRefusedError)"]
    waited = lmsbridge("--config", config, "migrate", "--wait", "2", env=down)
    assert waited.returncode == 1
    assert waited.stderr.count('"event":"database.unreachable"') >= 2
    assert "hunter2" not in result.stderr + waited.stderr
    lms = lmsbridge("--config", config, "--log-level", "error", "reconcile", "--lms", "--dry-run", env=down)
    assert lms.returncode == 1
    assert "acc-1: stopped: database: Connection refused" in lms.stderr


def test_status_with_rabbitmq_down_says_so_instead_of_claiming_the_ledger_holds(tmp_path: Path, amqp_url: str) -> None:
    """`status --json` with nothing listening at the broker's address still reports the database's
    half, but names the broker unreachable and leaves the identity unchecked (it said "holds",
    counting the unreachable broker's queues as empty)."""
    config = str(write_config(tmp_path, amqp_url, "brokerdownx"))
    assert lmsbridge("--config", config, "migrate").returncode == 0
    down = {"LMSBRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = lmsbridge("--config", config, "status", "--json", env=down)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["broker"] == "unreachable (AMQPConnectionError)"
    assert data["system_ledger"]["broker_ready"] is None
    assert data["system_ledger"]["identity"].startswith("unchecked: RabbitMQ did not answer")
    assert data["accounts"]["acc-1"]["paused"] is False
    up = json.loads(lmsbridge("--config", config, "status", "--json").stdout)
    assert up["broker"] == "reachable"
    assert up["system_ledger"]["identity"] == "holds"
