"""CPU a call of the reads a new person's lookup makes, on a SQLite file (issue 15).

``Directory.user_id`` and ``Accounts.account`` run once per new person on an account, on the
repository's SQLite thread. Each row is the mean of ``--calls`` calls in a row, in ``--rounds``
rounds; the repository is the real one (its thread hop, pool and transaction included).

    .venv/bin/python bench/bench_reads.py [--calls 3000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmsbridge.storage import Repository, create_engine

PEOPLE = 2_000


@contextlib.asynccontextmanager
async def sqlite_repository(file_name: str) -> AsyncIterator[Repository]:
    """The real repository on a new SQLite file in a temporary folder, its schema created; closed after."""
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(folder) / file_name}")
        repo = Repository(engine)
        await repo.create_schema()
        try:
            yield repo
        finally:
            await repo.close()
            await engine.dispose()


async def per_call(call: Callable[[int], Awaitable[object]], calls: int) -> tuple[float, float]:
    """(wall us, CPU us) a call, over ``calls`` calls in a row."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        await call(i)
    return 1e6 * (time.perf_counter() - wall) / calls, 1e6 * (time.process_time() - cpu) / calls


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    async with sqlite_repository("reads.db") as repo:
        await repo.directory.save_users("acct", [(f"p{i}@x.example", f"u{i}") for i in range(PEOPLE)])
        await repo.accounts.update_account("acct", email_filter="honoured")
        reads: dict[str, Callable[[int], Awaitable[object]]] = {
            "Directory.user_id": lambda i: repo.directory.user_id("acct", f"p{i % PEOPLE}@x.example"),
            "Accounts.account": lambda i: repo.accounts.account("acct"),
        }
        table = Table(title=f"A read's cost on SQLite, {args.calls:,} calls a round")
        for column in ("read", "wall us a call", "CPU us a call"):
            table.add_column(column, justify="right")
        for name, call in reads.items():
            runs = [await per_call(call, args.calls) for _ in range(args.rounds)]
            table.add_row(name, " / ".join(f"{w:.0f}" for w, _ in runs), " / ".join(f"{c:.0f}" for _, c in runs))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
