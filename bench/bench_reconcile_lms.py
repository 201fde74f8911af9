"""`reconcile --lms` at organisation size: the pass's peak memory and time against an account's size.

For each size N: a SQLite database with N records written to one account (N / 10 people, ten
learning objects each, every one with an assignment and half with a completion, its result, score
and time recorded, as the pass compares them), and an LMS that
lists them all back through StackOne's cross-user lists, less 1 % of each (the drift the pass must
find and queue again). The LMS is a small aiohttp server in this process serving pre-built pages
(the test stand-in filters its whole list for every page: too slow at this size); the pass is
``lmsbridge reconcile --lms`` in a subprocess, which reports its own peak RSS.

    .venv/bin/python bench/bench_reconcile_lms.py [--sizes 20000,200000] [--page-size 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_delivery import AMQP, KEY, SECRET, cleanup

from lmsbridge.storage.tables import directory, records, sync_state

ACCOUNT = "acc-big"
SOURCE = "acme-security"
OBJECTS = 10
DRIFT = 100  # every hundredth row of each list is missing from the LMS
COMPLETED = datetime(2026, 11, 30, 12, 0, 0, 250_000, tzinfo=UTC)  # every completion's time


def score(i: int) -> float:
    """The score of record ``i``'s completion (as written and as the LMS lists it)."""
    return 60.0 + (i % 400) / 10


# Each prints its own peak RSS (VmHWM: ru_maxrss keeps, across exec, the RSS of this process it was forked from).
PEAK = (
    "print('peak_kib', next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')).split()[1],"
    " file=sys.stderr)"
)
PASS = (
    "import asyncio, sys; from lmsbridge.logs import configure; "
    "from lmsbridge.settings import load_settings; from lmsbridge.reconcile.run import reconcile_command; "
    "configure(level='warning', fmt='json'); "
    "code = asyncio.run(reconcile_command(load_settings(sys.argv[1]), lms=True, as_json=True)); "
    f"{PEAK}; sys.exit(code)"
)
BASELINE = f"import sys, lmsbridge.reconcile.run, lmsbridge.cli; {PEAK}"


def seed(url: str, n: int) -> tuple[int, int]:
    """Write ``n`` synced records to the database; (assignments, completions) lmsbridge wrote."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    people = max(1, n // OBJECTS)
    with engine.begin() as conn:
        conn.execute(
            directory.insert(),
            [
                {"account": ACCOUNT, "email": f"p{i}@big.example", "user_id": f"usr_{i:08d}", "updated_at": now}
                for i in range(people)
            ],
        )
        for start in range(0, n, 20_000):
            rows, states = [], []
            for i in range(start, min(n, start + 20_000)):
                done = i % 2 == 0
                rows.append(
                    {
                        "id": i + 1,
                        "source": SOURCE,
                        "assignment_id": f"a{i}",
                        "person_key": f"p{i // OBJECTS}@big.example",
                        "platform": "limeplate",
                        "learning_object_ref": f"limeplate:course:c{i % OBJECTS}",
                        "title": "Course",
                        "rank": 3 if done else 1,
                        "assigned_at": now,
                        "progress": 1.0 if done else 0.0,
                        "completed_at": COMPLETED if done else None,
                        "passed": True if done else None,
                        "score": score(i) if done else None,
                        "version": 1,
                        "received_at": now,
                        "updated_at": now,
                    }
                )
                states.append(
                    {
                        "record_id": i + 1,
                        "account": ACCOUNT,
                        "status": "synced",
                        "assignment_created": True,
                        "lms_assignment_id": f"asg_{i}",
                        "completion_created": done,
                        "lms_completion_id": f"cmp_{i}" if done else None,
                        "completion_passed": True if done else None,
                        "completion_score": score(i) if done else None,
                        "completion_at": COMPLETED if done else None,
                        "attempts": 0,
                        "updated_at": now,
                        "synced_at": now - timedelta(hours=1),
                    }
                )
            conn.execute(records.insert(), rows)
            conn.execute(sync_state.insert(), states)
    engine.dispose()
    return n, (n + 1) // 2


def pages(n: int, kind: str, size: int) -> list[bytes]:
    """The LMS's listing of ``kind`` as JSON pages of ``size`` rows, every hundredth row left out."""
    step = 1 if kind == "assignments" else 2
    rows = [
        {
            "id": f"{kind[:3]}_{i}",
            "user_id": f"usr_{i // OBJECTS:08d}",
            "updated_at": "2026-12-01T00:00:00Z",
            "learning_object_external_reference": f"limeplate:course:c{i % OBJECTS}",
            **(
                {
                    "result": {"value": "Pass"},
                    "score": {"percentage": score(i)},
                    "completed_at": COMPLETED.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                }
                if kind == "completions"
                else {}
            ),
        }
        for i in range(0, n, step)
        if (i // step) % DRIFT != DRIFT - 1
    ]
    chunks = [rows[o : o + size] for o in range(0, len(rows), size)] or [[]]
    return [
        orjson.dumps({"data": chunk, "next": str(k + 1) if k + 1 < len(chunks) else None})
        for k, chunk in enumerate(chunks)
    ]


async def lms(n: int, size: int) -> tuple[web.AppRunner, str, dict[str, int]]:
    listed = {kind: pages(n, kind, size) for kind in ("assignments", "completions")}
    calls = {"assignments": 0, "completions": 0}

    async def listing(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        calls[kind] += 1
        page = int(request.query.get("next") or 0)
        return web.Response(body=listed[kind][page], content_type="application/json")

    app = web.Application()
    app.router.add_get("/unified/lms/{kind:assignments|completions}", listing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", calls


def config(tmp: Path, url: str, prefix: str, page_size: int) -> Path:
    path = tmp / "lms.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            amqp_url = "{AMQP}"
            database_url = "sqlite+aiosqlite:///{tmp / "lms.db"}"
            [stackone]
            base_url = "{url}"
            api_key = "{KEY}"
            rate_limit_per_minute = 1000000
            page_size = {page_size}
            [broker]
            prefix = "{prefix}"
            [sources.{SOURCE}]
            platform = "limeplate"
            secrets = ["{SECRET}"]
            accounts = ["{ACCOUNT}"]
            api_base_url = "{url}"
            api_key = "{KEY}"
            """
        )
    )
    return path


async def peak_of(*argv: str) -> tuple[int, float, bytes, bytes]:
    """Run a subprocess; its peak RSS in KiB (as it reported it), seconds, stdout and stderr."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    seconds = time.perf_counter() - started
    line = next((ln for ln in err.decode().splitlines() if ln.startswith("peak_kib")), "peak_kib 0")
    return int(line.split()[1]), seconds, out, err


async def one(n: int, page_size: int) -> dict[str, Any]:
    prefix = f"benchlms.{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        runner, url, calls = await lms(n, page_size)
        try:
            cfg = config(tmp, url, prefix, page_size)
            migrated = subprocess.run(
                [sys.executable, "-m", "lmsbridge", "--config", str(cfg), "migrate"], capture_output=True, text=True
            )
            if migrated.returncode:
                raise SystemExit(f"migrate failed: {migrated.stderr}")
            seed(f"sqlite:///{tmp / 'lms.db'}", n)
            peak, seconds, out, err = await peak_of(sys.executable, "-c", PASS, str(cfg))
        finally:
            await runner.cleanup()
            await cleanup(prefix, [ACCOUNT], [SOURCE])
    if b"{" not in out:
        raise SystemExit(f"the pass failed: {err.decode()[-2000:]}")
    report = orjson.loads(out[out.index(b"{") :])["accounts"][ACCOUNT]
    return {"n": n, "peak_mib": peak / 1024, "seconds": seconds, "calls": sum(calls.values()), "report": report}


def table(rows: list[dict[str, Any]], baseline_mib: float) -> Table:
    t = Table(title=f"reconcile --lms, one account (a process importing lmsbridge: {baseline_mib:.0f} MiB)")
    for name in (
        "records",
        "peak RSS MiB",
        "over baseline, bytes/record",
        "seconds",
        "LMS calls",
        "missing found",
        "queued again",
        "finished",
    ):
        t.add_column(name, justify="right")
    for r in rows:
        drift = r["report"]["drift"]
        missing = drift["lms_assignment_missing"] + drift["lms_completion_missing"]
        over = (r["peak_mib"] - baseline_mib) * 1024 * 1024 / r["n"]
        t.add_row(
            f"{r['n']:,}",
            f"{r['peak_mib']:.0f}",
            f"{over:,.0f}",
            f"{r['seconds']:.1f}",
            f"{r['calls']:,}",
            f"{missing:,}",
            f"{r['report']['queued']:,}",
            str(r["report"]["finished"]),
        )
    return t


async def main_async(args: argparse.Namespace) -> int:
    baseline, _, _, _ = await peak_of(sys.executable, "-c", BASELINE)
    rows = [await one(int(n), args.page_size) for n in args.sizes.split(",")]
    Console(width=160).print(table(rows, baseline / 1024))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="records on the account, comma-separated")
    parser.add_argument("--page-size", type=int, default=1000, help="stackone.page_size (the LMS pages)")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
