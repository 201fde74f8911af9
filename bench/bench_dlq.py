"""The dead-letter tool on a large dead-letter queue: each ``lmsbridge dlq`` command's time and peak memory.

After a long StackOne outage (longer than ``broker.max_retry_age``) thousands of syncs reach the
dead-letter queue at once, and an operator lists, shows and replays them. This fills a fresh
queue (its own prefix on the local RabbitMQ) with ``--messages`` dead sync tasks of about 1.5 KB,
then runs each command as an operator would, in a process of its own, and prints its wall time
and peak RSS. The queues are deleted afterwards.

    .venv/bin/python bench/bench_dlq.py [--messages 20000] [--amqp-url amqp://guest:guest@127.0.0.1/]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika
from rich.console import Console
from rich.table import Table

from lmsbridge.broker import Broker, Names
from lmsbridge.broker.codec import SyncTask
from lmsbridge.settings import BrokerSettings

ACCOUNT = "acc-1"
# The command line, then its peak RSS on stderr's last line: VmHWM in KiB, this process's own (ru_maxrss
# keeps, across exec, the RSS of the bench process it was forked from).
RUN = (
    "import sys\n"
    "from lmsbridge.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "print(hwm.split()[1], file=sys.stderr)\n"
    "raise SystemExit(code)\n"
)


async def fill(amqp_url: str, prefix: str, n: int) -> None:
    """Declare the topology under ``prefix`` and dead-letter ``n`` sync tasks, as the worker would."""
    broker = Broker(amqp_url, BrokerSettings(prefix=prefix), [ACCOUNT], name="bench-dlq")
    await broker.start(wait=10)
    error = "StackOne 503 for longer than broker.max_retry_age: " + "x" * 1400
    try:
        for start in range(0, n, 500):
            await asyncio.gather(
                *(
                    broker.publish_dead_sync(
                        SyncTask(rid, ACCOUNT),
                        correlation_id="bench",
                        received_at=1.0,
                        attempt=9,
                        reason="retry_age_exceeded",
                        error=error,
                    )
                    for rid in range(start + 1, min(start + 500, n) + 1)
                )
            )
    finally:
        await broker.close()


async def drop(amqp_url: str, prefix: str) -> None:
    """Delete every queue and exchange under ``prefix``."""
    names = Names(prefix)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in names.queues([], [ACCOUNT], len(BrokerSettings().retry_delays)):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.delay_exchange, names.dead_exchange):
            await channel.exchange_delete(exchange)


def command(config: Path, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, what it printed) of ``lmsbridge --config CONFIG ARGS``."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lmsbridge {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    rss_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, rss_kib / 1024, done.stdout


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1/")
    args = parser.parse_args()
    n = args.messages
    prefix = f"bench-dlq-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "lmsbridge.toml"
        config.write_text(
            f'amqp_url = "{args.amqp_url}"\n'
            f'database_url = "sqlite+aiosqlite:///{Path(folder) / "unused.db"}"\n'
            f'[stackone]\napi_key = "unused"\n[broker]\nprefix = "{prefix}"\n'
            f'[sources.acme]\nplatform = "exec"\nsecrets = ["whsec_unused"]\naccounts = ["{ACCOUNT}"]\n'
        )
        table = Table(title=f"lmsbridge dlq on {n:,} dead letters of ~1.5 KB (each command a process of its own)")
        for column in ("command", "seconds", "peak RSS MB", "says"):
            table.add_column(column, justify="right" if column in ("seconds", "peak RSS MB") else "left")
        try:
            filled = time.perf_counter()
            await fill(args.amqp_url, prefix, n)
            print(f"filled {n:,} dead letters in {time.perf_counter() - filled:.1f} s", file=sys.stderr)
            runs = [
                ("list (first 100)", ("dlq", "list", "--json")),
                (f"list --limit {n}", ("dlq", "list", "--json", "--limit", str(n))),
                ("show (the last)", ("dlq", "show", f"sync:{n}:{ACCOUNT}")),
                ("replay ID (the last)", ("dlq", "replay", f"sync:{n}:{ACCOUNT}")),
                ("replay --all", ("dlq", "replay", "--all")),
            ]
            for name, argv in runs:
                seconds, rss, printed = command(config, *argv)
                if argv[1] == "list":
                    says = f"{len(json.loads(printed)):,} listed"
                elif argv[1] == "show":
                    says = f"{json.loads(printed)['message_id']} shown"
                else:
                    says = printed.strip().removeprefix("lmsbridge: ")
                table.add_row(name, f"{seconds:.2f}", f"{rss:.0f}", says)
        finally:
            await drop(args.amqp_url, prefix)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
