"""Delivery benchmark: how lmsbridge spends StackOne's API budget (issue "Delivery to StackOne").

Phases (each adds rows to one table; lmsbridge runs as subprocesses with a TOML config, the
StackOne stand-in runs in this process beside the load generator):

- calls: `lmsbridge run` against a stand-in that honours ``filter[email]``, with no rate limit
  and every user pre-added. A realistic mix of ``--events`` events (500 people, 20 learning
  objects, 3 % duplicates resent with the same message id, 5 % out of order: completed before
  created for the same person and object, about half the records completed). The first 1,000
  events are the warm-up (they resolve every person and upsert every learning object); the
  row is StackOne requests after the warm-up / LMS records (assignments + completions)
  written after it. Target <= 1.05.
- budget: the stand-in and lmsbridge share a per-minute limit (``--budget-limit``, 1,200 by
  default, i.e. 20/s, to keep the run short). After a warm-up (people resolved, learning
  objects upserted), a backlog of 2,000 events for distinct people and objects; the row is
  requests the stand-in counted against its limit during 60 s of the drain / the limit's
  allowance for 60 s. Target >= 95 %, and no 429 at all.
- fairness: source "a" (account acc-a) with a 10,000-event backlog queued through
  `lmsbridge serve` alone, then `lmsbridge worker` starts; once A's drain is under way, ONE
  event for source "b" (account acc-b); the row is the time until the stand-in receives B's
  assignment. The shared limit is ``--fair-limit`` (6,000/min). Target <= 5 s.

    .venv/bin/python bench/bench_delivery.py [--events 10000] [--phases calls,budget,fairness]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from lmsbridge.testing.stackone import RecordedRequest, StackOneStandIn
from lmsbridge.testing.webhooks import T0, exec_assignment, exec_event
from lmsbridge.vendors import build_signer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AMQP = os.environ.get("LMSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
KEY = "bench-key"
UNLIMITED = 10_000_000
PEOPLE = 500
OBJECTS = 20
WARMUP = 1_000
DUPLICATES = 0.03
OUT_OF_ORDER = 0.05
BUDGET_PEOPLE = 110
BUDGET_BACKLOG = 2_000
BUDGET_SETTLE = 5.0  # seconds after the backlog starts before the measured window opens
BUDGET_WINDOW = 60.0
FAIR_BACKLOG = 10_000
FAIR_STARTED = 200  # A's writes before B's event is sent: the drain is under way

console = Console()


# --- processes and broker ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(
    tmp: Path, name: str, port: int, prefix: str, stackone_url: str, per_minute: int, sources: dict[str, str]
) -> Path:
    """A settings file; ``sources`` maps a source name to the one account it pushes to."""
    blocks = "".join(
        f"""
        [sources.{source}]
        platform = "exec"
        secrets = ["{SECRET}"]
        accounts = ["{account}"]
        """
        for source, account in sources.items()
    )
    path = tmp / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            amqp_url = "{AMQP}"
            database_url = "sqlite+aiosqlite:///{tmp / (name + ".db")}"
            [receiver]
            host = "127.0.0.1"
            port = {port}
            [stackone]
            base_url = "{stackone_url}"
            api_key = "{KEY}"
            rate_limit_per_minute = {per_minute}
            [broker]
            prefix = "{prefix}"
            prefetch = 64
            [worker]
            metrics_port = 0
            drain_timeout = 5.0
            """
        )
        + textwrap.dedent(blocks)
    )
    return path


def start(cfg: Path, role: str, log: Path, level: str = "warning") -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "lmsbridge.cli", "--log-level", level, "--log-format", "json", role],
            env={**os.environ, "LMSBRIDGE_CONFIG": str(cfg)},
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_summary(log: Path) -> str:
    """Log events at warning and above, by name (what went wrong, if anything)."""
    counts: Counter[str] = Counter()
    if log.exists():
        for line in log.read_bytes().splitlines():
            try:
                counts[str(orjson.loads(line).get("event"))] += 1
            except (orjson.JSONDecodeError, AttributeError):
                counts["(not json)"] += 1
    return ", ".join(f"{name} {n:,}" for name, n in counts.most_common(6)) or "none"


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("lmsbridge did not become ready")


async def queue_depth(name: str) -> int:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def cleanup(prefix: str, accounts: Iterable[str], sources: Iterable[str]) -> None:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        queues = ["events", "dead", *[f"events.{s}" for s in sources], *[f"sync.{a}" for a in accounts]]
        for suffix in [*queues, *[f"delay.{i}" for i in range(8)]]:
            await channel.queue_delete(f"{prefix}.{suffix}")
        for exchange in (prefix, f"{prefix}.delay", f"{prefix}.dead"):
            await channel.exchange_delete(exchange)


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One webhook to send: a resend (duplicate) has the same message id and body."""

    source: str
    message_id: str
    body: bytes
    person: int
    obj: int
    completed: bool


def email(person: int) -> str:
    return f"person{person:04d}@acme.example"


def make_event(source: str, person: int, obj: int, completed: bool, rng: random.Random) -> Event:
    status = ("completed" if rng.random() < 0.8 else "did_not_pass") if completed else "not_started"
    assignment = exec_assignment(
        f"{source}-{person:04d}-{obj:02d}",
        email(person),
        scenario=f"object-{obj:02d}",
        name=f"Object {obj:02d}",
        status=status,
        best_score=round(rng.uniform(40, 100), 1) if completed else None,
    )
    kind = "assignment.completed" if completed else "assignment.created"
    message_id = f"msg_{uuid.UUID(int=rng.getrandbits(128)).hex}"
    at = T0 + timedelta(days=3) if completed else T0
    body = orjson.dumps(exec_event(kind, assignment, at=at, event_id=message_id))
    return Event(source, message_id, body, person, obj, completed)


def realistic_mix(n: int, seed: int = 7) -> list[Event]:
    """``n`` events: duplicates, out-of-order pairs, about half the records completed.

    The first ``PEOPLE`` records are (p, p % OBJECTS), created first, so the warm-up (the first
    1,000 events) sees every person and every learning object.
    """
    rng = random.Random(seed)
    dupes = round(n * DUPLICATES)
    unique = n - dupes
    n_records = round(unique / 1.5)
    n_completed = unique - n_records
    n_swapped = round(n * OUT_OF_ORDER)
    if not PEOPLE <= n_records <= PEOPLE * OBJECTS or n_swapped > n_completed:
        raise SystemExit(f"--events {n} does not fit {PEOPLE} people x {OBJECTS} objects")
    seeds = [(p, p % OBJECTS) for p in range(PEOPLE)]
    others = [(p, o) for p in range(PEOPLE) for o in range(OBJECTS) if o != p % OBJECTS]
    pairs = seeds + rng.sample(others, n_records - PEOPLE)
    completed = set(rng.sample(range(n_records), n_completed))
    swapped = set(rng.sample(sorted(completed - set(range(PEOPLE))), n_swapped))

    head = [make_event("bench", *pairs[r], False, rng) for r in range(PEOPLE)]
    rng.shuffle(head)
    rest: list[tuple[int, Event]] = [(r, make_event("bench", *pairs[r], False, rng)) for r in range(PEOPLE, n_records)]
    rest += [(r, make_event("bench", *pairs[r], True, rng)) for r in sorted(completed)]
    rng.shuffle(rest)
    # put each record's two events in the wanted order (swap positions when they are not)
    where: dict[tuple[int, bool], int] = {(r, e.completed): i for i, (r, e) in enumerate(rest)}
    for r in completed:
        if r < PEOPLE:
            continue  # its created event is in the head
        created, done = where[(r, False)], where[(r, True)]
        if (done < created) != (r in swapped):
            rest[created], rest[done] = rest[done], rest[created]
    stream = head + [e for _, e in rest]
    # resends: the same message a little later (as a platform retrying would)
    keyed = [(float(i), e) for i, e in enumerate(stream)]
    for i in rng.sample(range(len(stream)), dupes):
        keyed.append((i + rng.randint(1, 300) + 0.5, stream[i]))
    keyed.sort(key=lambda k: k[0])
    return [e for _, e in keyed]


def expected_writes(events: Iterable[Event]) -> tuple[int, int]:
    """(assignments, completions) the LMS should hold after ``events``."""
    records = {(e.source, e.person, e.obj) for e in events}
    done = {(e.source, e.person, e.obj) for e in events if e.completed}
    return len(records), len(done)


class Poster:
    """Signs and posts events in order, ``concurrency`` at a time; retries what is refused."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.signer = build_signer("standard-webhooks", SECRET)
        self.accepted = 0
        self.refused = 0

    async def post(self, session: aiohttp.ClientSession, event: Event) -> None:
        for attempt in range(10):
            headers = {
                "Content-Type": "application/json",
                **self.signer.sign(event.body, message_id=event.message_id, timestamp=int(time.time())),
            }
            async with session.post(f"{self.url}/webhooks/{event.source}", data=event.body, headers=headers) as r:
                await r.read()
                if r.status == 202:
                    self.accepted += 1
                    return
            self.refused += 1
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"event {event.message_id} refused 10 times")

    async def post_all(self, events: Sequence[Event], concurrency: int = 32) -> None:
        iterator = iter(events)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def lane() -> None:
                for event in iterator:
                    await self.post(session, event)

            await asyncio.gather(*(lane() for _ in range(concurrency)))


# --- measuring --------------------------------------------------------------------------


def operation(r: RecordedRequest) -> str:
    path = r.path.removeprefix("/unified/lms/")
    if path.startswith("users/") and path.count("/") == 2:
        path = "users/{id}/" + path.rsplit("/", 1)[1]
    elif path.startswith("users/"):
        path = "users/{id}"
    if path == "users" and "filter[email]" in r.query:
        path = "users?filter[email]"
    return f"{r.method} {path}"


def breakdown(requests: Iterable[RecordedRequest]) -> str:
    counts = Counter(operation(r) + ("" if 200 <= r.status < 300 else f" ({r.status})") for r in requests)
    return ", ".join(f"{op} {n:,}" for op, n in counts.most_common())


async def settle(
    stackone: StackOneStandIn, done: Callable[[], bool], *, timeout: float, quiet: float, label: str
) -> bool:
    """Wait until ``done()``, then until the stand-in has had no request for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    report = time.monotonic() + 5
    while not done():
        if time.monotonic() > deadline:
            return False
        if time.monotonic() > report:
            report += 5
            a, c = len(stackone.assignments()), len(stackone.completions())
            console.print(f"  {label}: {len(stackone.requests):,} requests, {a:,} assignments, {c:,} completions")
        await asyncio.sleep(0.1)
    count, still = len(stackone.requests), time.monotonic()
    while time.monotonic() - still < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if len(stackone.requests) != count:
            count, still = len(stackone.requests), time.monotonic()
    return True


# --- phases -----------------------------------------------------------------------------


async def calls_per_record(tmp: Path, n: int) -> dict[str, Any]:
    events = realistic_mix(n)
    warm, rest = events[:WARMUP], events[WARMUP:]
    warm_a, warm_c = expected_writes(warm)
    total_a, total_c = expected_writes(events)
    stackone = StackOneStandIn(api_key=KEY, honour_email_filter=True)
    await stackone.start()
    for p in range(PEOPLE):
        stackone.add_user("acc-bench", email(p))
    port, prefix = free_port(), f"bench-dlv-{uuid.uuid4().hex[:6]}"
    log = tmp / "calls.log"
    proc = start(config(tmp, "calls", port, prefix, stackone.url, UNLIMITED, {"bench": "acc-bench"}), "run", log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        poster = Poster(url)
        started = time.perf_counter()
        await poster.post_all(warm)

        def warm_done() -> bool:
            return len(stackone.assignments()) >= warm_a and len(stackone.completions()) >= warm_c

        if not await settle(stackone, warm_done, timeout=120, quiet=2.0, label="warm-up"):
            raise RuntimeError("the warm-up did not finish in 120 s")
        req0, a0, c0 = len(stackone.requests), len(stackone.assignments()), len(stackone.completions())
        await poster.post_all(rest)

        def all_done() -> bool:
            return len(stackone.assignments()) >= total_a and len(stackone.completions()) >= total_c

        finished = await settle(stackone, all_done, timeout=300, quiet=3.0, label="after warm-up")
        elapsed = time.perf_counter() - started
        after = stackone.requests[req0:]
        written = len(stackone.assignments()) - a0 + len(stackone.completions()) - c0
        return {
            "events": len(events),
            "finished": finished,
            "seconds": elapsed,
            "accepted": poster.accepted,
            "refused": poster.refused,
            "records": total_a,
            "completions_expected": total_c,
            "assignments": len(stackone.assignments()),
            "completions": len(stackone.completions()),
            "requests": len(stackone.requests),
            "warm_requests": req0,
            "warm_written": a0 + c0,
            "after_requests": len(after),
            "after_written": written,
            "ratio": len(after) / written if written else float("inf"),
            "after_by_op": breakdown(after),
            "warm_by_op": breakdown(stackone.requests[:req0]),
            "conflicts": stackone.conflicts,
            "log": log_summary(log),
        }
    finally:
        stop(proc)
        await stackone.close()
        await cleanup(prefix, ["acc-bench"], ["bench"])


async def rate_budget(tmp: Path, limit: int) -> dict[str, Any]:
    rng = random.Random(11)
    warm = [make_event("bench", p, p % OBJECTS, False, rng) for p in range(BUDGET_PEOPLE)]
    pairs = [(p, o) for p in range(BUDGET_PEOPLE) for o in range(OBJECTS) if o != p % OBJECTS]
    rng.shuffle(pairs)
    backlog = [make_event("bench", p, o, False, rng) for p, o in pairs[:BUDGET_BACKLOG]]
    stackone = StackOneStandIn(api_key=KEY, honour_email_filter=True, rate_limit_per_minute=limit)
    await stackone.start()
    for p in range(BUDGET_PEOPLE):
        stackone.add_user("acc-bench", email(p))
    port, prefix = free_port(), f"bench-dlv-{uuid.uuid4().hex[:6]}"
    log = tmp / "budget.log"
    proc = start(config(tmp, "budget", port, prefix, stackone.url, limit, {"bench": "acc-bench"}), "run", log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        poster = Poster(url)
        await poster.post_all(warm)
        if not await settle(
            stackone, lambda: len(stackone.assignments()) >= len(warm), timeout=120, quiet=1.0, label="warm-up"
        ):
            raise RuntimeError("the warm-up did not finish in 120 s")
        warm_requests, warm_limited = len(stackone.requests), stackone.rate_limited
        t0 = time.time()
        posting = asyncio.create_task(poster.post_all(backlog, concurrency=64))
        window = (t0 + BUDGET_SETTLE, t0 + BUDGET_SETTLE + BUDGET_WINDOW)
        # the window only: the drain goes on after it, and is not waited for
        while time.time() < window[1] + 1.0:
            await asyncio.sleep(0.5)
        await posting
        written = len(stackone.assignments()) - len(warm)
        inside = [r for r in stackone.requests if window[0] <= r.time < window[1]]
        counted = [r for r in inside if r.status != 429]
        limited_at = [r.time - t0 for r in stackone.requests if r.status == 429]
        allowance = limit * BUDGET_WINDOW / 60
        return {
            "limit": limit,
            "warm_requests": warm_requests,
            "warm_limited": warm_limited,
            "backlog": len(backlog),
            "written": written,
            "queued": poster.accepted - len(warm),
            "window_requests": len(inside),
            "window_counted": len(counted),
            "use": len(counted) / allowance,
            "rate_limited": stackone.rate_limited,
            "first_429": min(limited_at) if limited_at else None,
            "window_by_op": breakdown(inside),
            "log": log_summary(log),
        }
    finally:
        stop(proc)
        await stackone.close()
        await cleanup(prefix, ["acc-bench"], ["bench"])


async def fairness(tmp: Path, limit: int) -> dict[str, Any]:
    rng = random.Random(13)
    pairs = [(p, o) for p in range(PEOPLE) for o in range(OBJECTS)]
    rng.shuffle(pairs)
    backlog = [make_event("a", p, o, False, rng) for p, o in pairs[:FAIR_BACKLOG]]
    b_event = make_event("b", 9_999, 0, False, rng)
    stackone = StackOneStandIn(api_key=KEY, honour_email_filter=True, rate_limit_per_minute=limit)
    await stackone.start()
    for p in range(PEOPLE):
        stackone.add_user("acc-a", email(p))
    stackone.add_user("acc-b", email(9_999))
    port, prefix = free_port(), f"bench-dlv-{uuid.uuid4().hex[:6]}"
    cfg = config(tmp, "fair", port, prefix, stackone.url, limit, {"a": "acc-a", "b": "acc-b"})
    log = tmp / "fair.log"
    url = f"http://127.0.0.1:{port}"
    serve = start(cfg, "serve", log)
    worker: subprocess.Popen[bytes] | None = None
    try:
        await wait_ready(url)
        poster = Poster(url)
        queued_at = time.perf_counter()
        await poster.post_all(backlog, concurrency=64)
        queue_seconds = time.perf_counter() - queued_at
        worker = start(cfg, "worker", log)
        worker_at = time.perf_counter()
        deadline = worker_at + 120
        while len(stackone.assignments("acc-a")) < FAIR_STARTED and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        a_before = len(stackone.assignments("acc-a"))
        events_depth = await queue_depth(f"{prefix}.events.a")
        sync_depth = await queue_depth(f"{prefix}.sync.acc-a")
        sent_wall, sent = time.time(), time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await poster.post(session, b_event)
        while not stackone.assignments("acc-b") and time.perf_counter() < sent + 120:
            await asyncio.sleep(0.01)
        got = stackone.assignments("acc-b")
        latency = got[0]["received"] - sent if got else None
        b_requests = [r for r in stackone.requests if r.account == "acc-b"]
        a_during = len(stackone.assignments("acc-a")) - a_before
        return {
            "limit": limit,
            "backlog": poster.accepted - 1,
            "queue_seconds": queue_seconds,
            "started_after": sent - worker_at,
            "a_written_before": a_before,
            "events_depth": events_depth,
            "sync_depth": sync_depth,
            "latency": latency,
            "b_first_request": (b_requests[0].time - sent_wall) if b_requests else None,
            "b_requests": ", ".join(f"{operation(r)} +{r.time - sent_wall:.2f}s" for r in b_requests),
            "a_during": a_during,
            "log": log_summary(log),
        }
    finally:
        if worker is not None:
            stop(worker)
        stop(serve)
        await stackone.close()
        await cleanup(prefix, ["acc-a", "acc-b"], ["a", "b"])


# --- report -----------------------------------------------------------------------------


def seconds(value: float | None, ceiling: float = 120) -> str:
    return f"{value:.2f}" if value is not None else f"> {ceiling:.0f}"


def table(results: dict[str, dict[str, Any]]) -> Table:
    out = Table(title=f"Delivery to StackOne on {os.cpu_count()} cores (SQLite, StackOne stand-in)")
    out.add_column("measure")
    out.add_column("value", justify="right")
    out.add_column("target", justify="right")
    if "calls" in results:
        r = results["calls"]
        out.add_row(
            f"calls per LMS record after warm-up ({r['events']:,} events)",
            f"{r['ratio']:.3f}" + ("" if r["finished"] else " (unfinished)"),
            "<= 1.05",
        )
        out.add_row(
            "  requests / records written after warm-up", f"{r['after_requests']:,} / {r['after_written']:,}", ""
        )
        out.add_row("  requests / records written in warm-up", f"{r['warm_requests']:,} / {r['warm_written']:,}", "")
        out.add_row(
            "  total requests / assignments + completions",
            f"{r['requests']:,} / {r['assignments']:,} + {r['completions']:,}",
            f"{r['records']:,} + {r['completions_expected']:,}",
        )
        out.add_row("  requests after warm-up by operation", r["after_by_op"], "")
        out.add_row(
            "  409 conflicts / refused webhooks / run time (s)",
            f"{r['conflicts']} / {r['refused']} / {r['seconds']:.0f}",
            "0 / 0 /",
        )
    if "budget" in results:
        r = results["budget"]
        out.add_row(
            f"rate budget use, {BUDGET_WINDOW:.0f} s of the drain at {r['limit']:,}/min",
            f"{100 * r['use']:.1f} %",
            ">= 95 %",
        )
        out.add_row(
            "  requests in window (counted / all)",
            f"{r['window_counted']:,} / {r['window_requests']:,}",
            f"{r['limit'] * BUDGET_WINDOW / 60:,.0f}",
        )
        out.add_row("  429s from the stand-in (stackone.rate_limited)", f"{r['rate_limited']:,}", "0")
        first = r["first_429"]
        out.add_row("  first 429, s after the backlog started", "-" if first is None else f"{first:.1f}", "")
        out.add_row(
            f"  backlog queued / written in {BUDGET_SETTLE + BUDGET_WINDOW:.0f} s",
            f"{r['queued']:,} / {r['written']:,}",
            f"{r['queued']:,} / {(BUDGET_SETTLE + BUDGET_WINDOW) * r['limit'] / 60:,.0f}",
        )
        out.add_row("  requests in window by operation", r["window_by_op"], "")
    if "fairness" in results:
        r = results["fairness"]
        out.add_row(
            f"fairness: B's assignment after B's event (s), A backlog {r['backlog']:,} at {r['limit']:,}/min",
            seconds(r["latency"]),
            "<= 5",
        )
        out.add_row("  B's first StackOne request after B's event (s)", seconds(r["b_first_request"]), "")
        out.add_row("  B's requests", r["b_requests"] or "none", "")
        out.add_row(
            "  when B was sent: A written / events queue / A sync queue",
            f"{r['a_written_before']:,} / {r['events_depth']:,} / {r['sync_depth']:,}",
            "",
        )
        out.add_row("  A written while B waited", f"{r['a_during']:,}", "")
    for phase, r in results.items():
        out.add_row(f"  {phase}: lmsbridge warnings and errors", r["log"], "none")
    return out


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lmsbridge-bench-") as tmpdir:
        tmp = Path(tmpdir)
        results: dict[str, dict[str, Any]] = {}
        for phase in args.phases.split(","):
            began = time.perf_counter()
            console.print(f"[bold]{phase}[/bold]")
            if phase == "calls":
                results[phase] = await calls_per_record(tmp, args.events)
            elif phase == "budget":
                results[phase] = await rate_budget(tmp, args.budget_limit)
            elif phase == "fairness":
                results[phase] = await fairness(tmp, args.fair_limit)
            else:
                raise SystemExit(f"unknown phase {phase!r}")
            console.print(f"  {phase} took {time.perf_counter() - began:.0f} s")
    console.print(table(results))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--budget-limit", type=int, default=1_200, help="requests per minute (phase budget)")
    parser.add_argument("--fair-limit", type=int, default=6_000, help="requests per minute (phase fairness)")
    parser.add_argument("--phases", default="calls,budget,fairness")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
