"""End-to-end benchmark: receiver -> RabbitMQ -> worker -> SQLite -> StackOne stand-in.

Phases (each prints a row):
- throughput: `lmsbridge run` in its own process; signed webhooks (wrk replaying pre-signed
  requests, 64 connections) as fast as it goes for ``--duration`` seconds, or paced at
  ``--rate`` a second; LMS writes per second while the load runs (over as many seconds as wrk
  sent for, from the first write), the backlog left at its end, and each process's share of a
  core (serve, worker, RabbitMQ, wrk, this process);
- split: the same with `lmsbridge serve` and `lmsbridge worker` as two processes (the
  production layout: each gets a core);
- latency: the same at a steady 100 events per second; webhook-sent -> LMS-written p50/p99; a
  thread beside it times an ``fdatasync`` every 20 ms in the database's folder, and the row says how
  many of the events written after over 100 ms were in flight while the disk stalled (over 50 ms);
- drain: ``--backlog`` events already queued, then `lmsbridge worker` alone: events/s;
- memory: peak RSS (VmHWM) of `lmsbridge serve` while it queues ``--backlog`` events, and of
  `lmsbridge worker` while it drains them (``--after S``: and for S seconds after, while its
  periodic round checks the LMS it deferred during the drain).

``--profile DIR``: py-spy samples the worker of the split phase while the load runs, and the
draining worker for its first 20 s (py-spy installed beside Python, not a dependency), and
prints its top frames by share of samples.

``--callgrind`` (drain): `serve` and the worker run under valgrind's callgrind, switched on when
the queueing starts and at the worker's first write; the rows give their instructions per webhook
queued and per event written, from the 200th on. A count, not seconds: it
does not move with this machine's speed (up to 2 x between hours). Runs of the same code differ
by 3-6 % (batches of different sizes), so a change of 5 % shows in two pairs of runs. The worker
runs ~50 x slower: use a small backlog (1,500: about two and a half minutes).

``--python PATH``: serve and worker run on another interpreter (a venv of its own with
lmsbridge installed: ``python -m venv v && v/bin/pip install '.[fast]'``), the stand-in and the
load on this one, so interpreters are compared on lmsbridge's processes alone.

The StackOne stand-in answers at once and runs in this process. The latency and drain phases
post from this process too (they need each webhook's send time, or few connections).
The mix: every event a new LMS record, over 20 learning objects (so a content upsert and a
user lookup are paid once per object and per person, as in production).

    .venv/bin/python bench/bench_pipeline.py [--duration 60] [--backlog 100000] [--rate 800]

Needs wrk (Debian package ``wrk``) for the throughput and split phases.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
from bench_receiver import LUA as WRK_LUA
from bench_receiver import DiskProbe, cpu_seconds, rabbitmq_pid
from rich.console import Console
from rich.table import Table

from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import exec_assignment, exec_event
from lmsbridge.vendors import build_signer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AMQP = os.environ.get("LMSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ACCOUNT = "acc-bench"
KEY = "bench-key"
OBJECTS = 20  # learning objects in the mix: each content upsert and user lookup is paid once
PEOPLE = 20_000  # enough (person, object) pairs that every event is a new LMS record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(tmp: Path, port: int, prefix: str, stackone_url: str, name: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            amqp_url = "{AMQP}"
            database_url = "sqlite+aiosqlite:///{tmp / f"{name}-{prefix}.db"}"
            [receiver]
            host = "127.0.0.1"
            port = {port}
            [stackone]
            base_url = "{stackone_url}"
            api_key = "{KEY}"
            rate_limit_per_minute = 10000000
            [broker]
            prefix = "{prefix}"
            [worker]
            metrics_port = 0
            [sources.bench]
            platform = "exec"
            secrets = ["{SECRET}"]
            accounts = ["{ACCOUNT}"]
            tolerance_seconds = 3600  # the requests are signed before the load: a soak outlasts 300 s
            """
        )
    )
    return path


LOG_LEVEL = "warning"  # --log-level: the lmsbridge processes' (their lines go to --logs, or nowhere)
LOGS: Path | None = None  # --logs: keep each process's warnings and errors here
PROFILE: Path | None = None  # --profile: py-spy the split phase's worker into this folder
WORKERS = 1  # --workers: worker processes in the split phase (sharing the SQLite file)
CALLGRIND = False  # --callgrind: run the draining worker under valgrind and count its instructions
PYTHON = sys.executable  # --python: the interpreter running lmsbridge's processes (this one by default)


def start(cfg: Path, role: str) -> subprocess.Popen[bytes]:
    stderr: Any = subprocess.DEVNULL
    if LOGS is not None:
        LOGS.mkdir(parents=True, exist_ok=True)
        stderr = (LOGS / f"{cfg.stem}-{role}.log").open("ab")
    command = [PYTHON, "-m", "lmsbridge.cli", "--log-level", LOG_LEVEL, "--log-format", "json", role]
    if CALLGRIND and role in ("serve", "worker"):  # instrumented only once switched on (instructions())
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null", *command]
    return subprocess.Popen(
        command,
        env={**os.environ, "LMSBRIDGE_CONFIG": str(cfg)},
        stderr=stderr,
        stdout=stderr,
    )


def instructions(pid: int) -> int:
    """Instructions a process under callgrind has run since its instrumentation was switched on
    (switched on by the first call): a count that does not move with the machine's speed, as the
    CPU seconds do (this machine's vary by up to 2 x between hours)."""
    control = ["callgrind_control", "-e", "Ir", str(pid)]
    shown = subprocess.run(control, capture_output=True, text=True, check=True).stdout
    if "instrumentation is switched off" in shown:
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True, check=True)
        return 0
    return sum(int(n.replace(",", "")) for n in re.findall(r"^\s*Th \d+\s+([\d,]+)", shown, re.MULTILINE))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("lmsbridge did not become ready")


def person_and_object(i: int) -> tuple[str, str]:
    """Event ``i``'s person and scenario: a realistic mix, every (person, object) pair new."""
    return f"person{(i // OBJECTS) % PEOPLE:05d}@acme.example", f"scenario-{i % OBJECTS:02d}"


def envelope(i: int) -> bytes:
    email, scenario = person_and_object(i)
    assignment = exec_assignment(f"b{i:07d}", email, scenario=scenario, name=f"Scenario {scenario}")
    return orjson.dumps(exec_event("assignment.created", assignment, event_id=f"evt_{i}"))


class Load:
    """Signs and posts events; remembers when each was sent (by person and learning object)."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/webhooks/bench"
        self.signer = build_signer("standard-webhooks", SECRET)
        self.sent: dict[tuple[str, str], float] = {}
        self.accepted = 0
        self.refused = 0

    async def post(self, session: aiohttp.ClientSession, i: int) -> None:
        body = envelope(i)
        headers = {
            "Content-Type": "application/json",
            **self.signer.sign(body, message_id=f"m{i}", timestamp=int(time.time())),
        }
        email, scenario = person_and_object(i)
        self.sent[(email, f"exec:scenario:{scenario}")] = time.perf_counter()
        async with session.post(self.url, data=body, headers=headers) as response:
            await response.read()
            if response.status == 202:
                self.accepted += 1
            else:
                self.refused += 1


EMAIL_OF: dict[str, str] = {}  # StackOne user id -> e-mail, filled when the stand-in's users are added


def written_at(stackone: StackOneStandIn) -> dict[tuple[str, str], float]:
    """(e-mail, learning object) -> when the stand-in received its assignment (perf_counter clock)."""
    return {
        (EMAIL_OF[a["user_id"]], a["body"]["learning_object_external_reference"]): a["received"]
        for a in stackone.assignments(ACCOUNT)
    }


def presign(path: Path, first: int, n: int) -> None:
    """Events ``first`` .. ``first + n - 1``, signed now, one request per line (with its own body) for
    bench_receiver's wrk script (its first line, the body shared by lines without one, is unused)."""
    signer = build_signer("standard-webhooks", SECRET)
    ts = int(time.time())
    with path.open("w") as f:
        f.write("{}\n")
        for i in range(first, first + n):
            body = envelope(i)
            signature = signer.sign(body, message_id=f"m{i}", timestamp=ts)["webhook-signature"]
            f.write(f"m{i}\t{ts}\t{signature}\t{body.decode()}\n")


async def throughput(
    tmp: Path,
    stackone: StackOneStandIn,
    duration: float,
    concurrency: int,
    *,
    split: bool = False,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Load for ``duration`` s on one `lmsbridge run`, or (``split``) on `serve` and `worker` processes.

    The load is wrk replaying pre-signed webhooks, every one a new record: as fast as
    ``concurrency`` connections go, or paced at ``rate`` a second. Python signing and posting
    each request cost the benchmark's process 0.6-0.7 of a core at ~850/s, taken from the
    processes it measures; wrk with pre-signed requests takes a fraction of that.
    """
    port, prefix = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
    cfg = config(tmp, port, prefix, stackone.url, "split" if split else "throughput")  # each run its own database
    requests = tmp / f"{prefix}.requests"
    presign(requests, 0, int(duration * (rate * 1.2 if rate else 4_000)))
    script = tmp / "replay.lua"
    script.write_text(WRK_LUA)  # shared with bench_receiver
    workers = [f"worker{n + 1}" if WORKERS > 1 else "worker" for n in range(WORKERS)]
    procs = [start(cfg, "serve"), *(start(cfg, "worker") for _ in workers)] if split else [start(cfg, "run")]
    names = ["serve", *workers] if split else ["run"]
    url = f"http://127.0.0.1:{port}"
    spy: tuple[subprocess.Popen[bytes], Path] | None = None
    try:
        await wait_ready(url)
        if split and PROFILE is not None:
            spy = profile(procs[1].pid, duration)
        beam = rabbitmq_pid()
        pids = {name: p.pid for name, p in zip(names, procs, strict=True)} | ({"RabbitMQ": beam} if beam else {})
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        own_before = time.process_time()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        threads = 2
        written_before = written_count(stackone)
        started = time.perf_counter()
        wrk = await asyncio.create_subprocess_exec(
            "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration:.0f}s", "--timeout", "10s", "-s", str(script),
            f"{url}/webhooks/bench", "--", str(requests), str(threads), f"{rate:.3f}", "0",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await wrk.communicate()
        sent_for = time.perf_counter() - started
        cpu = {name: 100 * (cpu_seconds(pid) - cpu_before[name]) / sent_for for name, pid in pids.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # only wrk has been reaped since
        cpu["wrk"] = 100 * (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime)
        cpu["wrk"] /= sent_for
        cpu["bench (stand-in)"] = 100 * (time.process_time() - own_before) / sent_for
        line = next(x for x in out.decode().splitlines() if x.startswith("RESULT"))
        total, refused, errors, micros, p50, p99, _ = line.split()[1:]
        accepted = int(total) - int(refused) - int(errors)
        in_window = written_count(stackone) - written_before
        sending = float(micros) / 1e6  # wrk's own time sending: its start-up (reading the requests) left out
        if spy is not None:
            await asyncio.to_thread(spy[0].wait)
            print_profile(spy[1])
        # wait for the backlog to drain (bounded)
        drain_deadline = time.perf_counter() + 300
        while written_count(stackone) - written_before < accepted and time.perf_counter() < drain_deadline:
            await asyncio.sleep(1.0)
            print(f"  accepted {accepted:,}, written {written_count(stackone) - written_before:,}", flush=True)
        finished = time.perf_counter()
        written = written_count(stackone) - written_before
        sustained = sustained_writes(stackone, written_before, sending)  # once all are in: by their times
        return {
            "offered_per_s": rate,
            "accepted": accepted,
            "refused": int(refused) + int(errors),
            "accepted_per_s": accepted / sending,
            "accept_p50_ms": float(p50),
            "accept_p99_ms": float(p99),
            "written": written,
            "written_per_s_in_window": sustained,
            "backlog_at_end": accepted - in_window,
            "written_per_s_overall": written / (finished - started),
            "cpu_pct": cpu,
            "rss_mb": max(peak_rss_mb(p.pid) for p in procs),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        await cleanup(prefix)


def profile(pid: int, duration: float) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy samples process ``pid`` for ``duration`` seconds: (py-spy, where its collapsed stacks go)."""
    assert PROFILE is not None
    PROFILE.mkdir(parents=True, exist_ok=True)
    out = PROFILE / f"worker-{pid}.txt"
    command = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--rate", "200"]
    command += ["--duration", str(int(duration)), "--format", "raw", "--nonblocking", "--threads", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


AREAS = {  # a frame's file -> the part of the stack it belongs to (the first match from the top wins)
    "sqlalchemy": "SQLAlchemy",
    "sqlite3": "sqlite3",
    "aiormq": "aio-pika/aiormq/pamqp",
    "aio_pika": "aio-pika/aiormq/pamqp",
    "pamqp": "aio-pika/aiormq/pamqp",
    "aiohttp": "aiohttp (client)",
    "pydantic": "pydantic",
    "structlog": "structlog/logs",
    "lmsbridge/logs": "structlog/logs",
    "orjson": "orjson",
    "prometheus_client": "prometheus",
    "lmsbridge/": "lmsbridge's own",
    "asyncio": "asyncio/uvloop",
    "uvloop": "asyncio/uvloop",
}


def print_profile(path: Path, top: int = 15) -> None:
    """Top frames of a py-spy raw profile: by own samples, and each thread's samples by area."""
    if not path.exists():
        print(f"  (no profile at {path})")
        return
    own: dict[str, int] = {}
    area_of: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        thread = frames[0].partition(": ")[2] if frames else "?"
        threads[thread] = threads.get(thread, 0) + count
        leaf = frames[-1] if frames else "?"
        own[leaf] = own.get(leaf, 0) + count
        area = "other"
        for frame in reversed(frames):  # from the leaf: the innermost library the sample is in
            hit = next((name for key, name in AREAS.items() if key in frame), None)
            if hit is not None:
                area = hit
                break
        area_of[area] = area_of.get(area, 0) + count
    print(f"  py-spy: {total:,} samples (non-idle) in {path}")
    for thread, n in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"    thread {thread}: {100 * n / total:.1f} %")
    for area, n in sorted(area_of.items(), key=lambda kv: -kv[1]):
        print(f"    {area:<24} {100 * n / total:5.1f} %")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f} %  {frame[:110]}")


async def latency(tmp: Path, stackone: StackOneStandIn, rate: float, duration: float) -> dict[str, Any]:
    port, prefix = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
    proc = start(config(tmp, port, prefix, stackone.url, "latency"), "run")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        with DiskProbe(tmp) as disk:
            return await _paced(url, stackone, rate, duration, disk)
    finally:
        proc.terminate()
        proc.wait()
        await cleanup(prefix)


async def _paced(url: str, stackone: StackOneStandIn, rate: float, duration: float, disk: DiskProbe) -> dict[str, Any]:
    """``rate`` webhooks a second for ``duration`` seconds; each one's lag from sent to written, and
    how many of the slow ones were in flight while the disk stalled (a sync over 50 ms)."""
    load = Load(url)
    base = 10_000_000
    async with aiohttp.ClientSession() as session:
        n = int(rate * duration)
        started = time.perf_counter()
        tasks = []
        for k in range(n):
            await asyncio.sleep(max(0.0, started + k / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(load.post(session, base + k)))
        await asyncio.gather(*tasks)
        deadline = time.perf_counter() + 30
        while written_count(stackone) < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
    written = written_at(stackone)
    spans = [(sent, written[ref]) for ref, sent in load.sent.items() if ref in written]
    lags = sorted(1000 * (end - sent) for sent, end in spans)
    stalls = disk.stalls(0.05)
    slow = [(sent, end) for sent, end in spans if end - sent > 0.1]
    behind = [span for span in slow if any(b < span[1] and e > span[0] for b, e in stalls)]
    return {
        "events": n,
        "written": len(lags),
        "p50_ms": statistics.median(lags),
        "p99_ms": lags[int(0.99 * (len(lags) - 1))],
        "over_100_ms": len(slow),
        "over_100_ms_behind_disk": len(behind),
        "disk_syncs": len(disk.syncs),
        "disk_slowest_ms": disk.slowest_ms(),
        "disk_stalls": len(stalls),
    }


async def backlog_and_drain(
    tmp: Path, stackone: StackOneStandIn, backlog: int, drain_for: float = 1800.0, after: float = 0.0
) -> dict[str, Any]:
    """Queue ``backlog`` events through `lmsbridge serve`, then drain them with `lmsbridge worker`.

    The drain stops after ``drain_for`` seconds even if unfinished (the row then says how far it got).
    ``after``: keep the worker running so long once drained, still measuring its peak, for what its
    periodic round does then (the LMS check it defers while the backlog waits lists every record).
    """
    port, prefix = free_port(), f"bench-{uuid.uuid4().hex[:6]}"
    cfg = config(tmp, port, prefix, stackone.url, "drain")
    serve = start(cfg, "serve")
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        load = Load(url)
        counter = iter(range(20_000_000, 20_000_000 + backlog))
        queued_from: tuple[int, int] | None = None  # (accepted, instructions) once callgrind has warmed up
        if CALLGRIND:
            instructions(serve.pid)  # switched on now; counted from the 200th webhook on
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def worker() -> None:
                nonlocal queued_from
                for i in counter:
                    await load.post(session, i)
                    if CALLGRIND and queued_from is None and load.accepted >= 200:
                        queued_from = (load.accepted, instructions(serve.pid))

            beam = rabbitmq_pid()
            broker_before = cpu_seconds(beam) if beam else 0.0
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(64)))
            queue_rate = load.accepted / (time.perf_counter() - started)
            broker_queueing = (cpu_seconds(beam) - broker_before) / max(1, load.accepted) if beam else 0.0
        serve_instructions = 0.0
        if queued_from is not None and load.accepted > queued_from[0]:
            serve_instructions = (instructions(serve.pid) - queued_from[1]) / (load.accepted - queued_from[0])
        serve_rss = peak_rss_mb(serve.pid)
    finally:
        serve.terminate()
        serve.wait()
    before = written_count(stackone)
    worker_proc = start(cfg, "worker")
    spy = profile(worker_proc.pid, min(drain_for, 20)) if PROFILE is not None else None
    try:
        started = time.perf_counter()
        deadline = started + drain_for
        peak = 0.0
        # The worker's CPU per event, from its first write to its last (start-up is not counted).
        first: tuple[int, float, float] | None = None
        counted: tuple[int, int] | None = None  # (written, instructions) once callgrind has warmed up
        while (written := written_count(stackone) - before) < load.accepted and time.perf_counter() < deadline:
            if first is None and written > 0:
                first = (written, cpu_seconds(worker_proc.pid), cpu_seconds(beam) if beam else 0.0)
                if CALLGRIND:
                    instructions(worker_proc.pid)  # switched on now; counted from 200 events on
            elif CALLGRIND and first is not None and counted is None and written >= first[0] + 200:
                counted = (written, instructions(worker_proc.pid))
            await asyncio.sleep(0.05 if first is None else 0.5)
            peak = max(peak, peak_rss_mb(worker_proc.pid))
        elapsed = time.perf_counter() - started
        done = written_count(stackone) - before
        cpu_per_event = broker_draining = instructions_per_event = 0.0
        if counted is not None and done > counted[0]:
            instructions_per_event = (instructions(worker_proc.pid) - counted[1]) / (done - counted[0])
        if first is not None and done > first[0]:
            cpu_per_event = (cpu_seconds(worker_proc.pid) - first[1]) / (done - first[0])
            broker_draining = (cpu_seconds(beam) - first[2]) / (done - first[0]) if beam else 0.0
        peak = max(peak, peak_rss_mb(worker_proc.pid))
        after_peak, listings, seen = peak, 0, len(stackone.requests)
        until = time.perf_counter() + after
        while time.perf_counter() < until:
            await asyncio.sleep(0.5)
            after_peak = max(after_peak, peak_rss_mb(worker_proc.pid))
        listings = sum(1 for r in stackone.requests[seen:] if r.method == "GET")
        if spy is not None:
            await asyncio.to_thread(spy[0].wait)
            print_profile(spy[1])
    finally:
        worker_proc.terminate()
        worker_proc.wait()
        await cleanup(prefix)
    return {
        "queued": load.accepted,
        "queue_rate": queue_rate,
        "serve_rss_mb": serve_rss,
        "serve_instructions_per_event": serve_instructions,
        "drained": done,
        "drain_per_s": done / elapsed,
        "drain_seconds": elapsed,
        "worker_cpu_us_per_event": 1e6 * cpu_per_event,
        "worker_instructions_per_event": instructions_per_event,
        "broker_cpu_us_queueing": 1e6 * broker_queueing,
        "broker_cpu_us_draining": 1e6 * broker_draining,
        "worker_rss_mb": peak,
        "after_seconds": after,
        "worker_rss_after_mb": after_peak,
        "listings_after": listings,
    }


def sustained_writes(stackone: StackOneStandIn, first: int, seconds: float) -> float:
    """LMS writes a second over ``seconds`` from the first write after position ``first``.

    The window is as long as wrk sent for, and starts when the writes did: a pipeline keeping up
    with the offer writes it in full, one falling behind writes what it can.
    """
    times = [a["received"] for a in stackone.assignments(ACCOUNT)[first:]]
    if not times or seconds <= 0:
        return 0.0
    end = times[0] + seconds
    return sum(1 for t in times if t < end) / seconds


def written_count(stackone: StackOneStandIn) -> int:
    """Assignments written so far (one account here), without copying them: polling
    ``assignments()`` copied every record, up to 100,000, twice a second, in the stand-in's process."""
    return stackone.written()[0]


async def cleanup(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for suffix in ["events", "events.bench", "dead", f"sync.{ACCOUNT}", *[f"delay.{i}" for i in range(8)]]:
            await channel.queue_delete(f"{prefix}.{suffix}")
        for exchange in (prefix, f"{prefix}.delay", f"{prefix}.dead"):
            await channel.exchange_delete(exchange)


async def main_async(args: argparse.Namespace) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="lmsbridge-bench-") as tmpdir:
        tmp = Path(tmpdir)
        results: dict[str, dict[str, Any]] = {}
        for phase in args.phases.split(","):
            stackone = StackOneStandIn(api_key=KEY)
            await stackone.start()
            for p in range(PEOPLE):
                email = f"person{p:05d}@acme.example"
                EMAIL_OF[stackone.add_user(ACCOUNT, email)] = email
            try:
                if phase == "throughput":
                    results[phase] = await throughput(tmp, stackone, args.duration, args.concurrency, rate=args.rate)
                elif phase == "split":
                    results[phase] = await throughput(
                        tmp, stackone, args.duration, args.concurrency, split=True, rate=args.rate
                    )
                elif phase == "latency":
                    results[phase] = await latency(tmp, stackone, 100.0, min(args.duration, 30))
                elif phase == "drain":
                    results[phase] = await backlog_and_drain(tmp, stackone, args.backlog, args.drain_for, args.after)
            finally:
                await stackone.close()
            console.print(phase, results[phase])
    table = Table(title=f"End to end on {os.cpu_count()} cores (SQLite, StackOne stand-in answering at once)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for phase, layout in (("throughput", "run"), ("split", "serve + worker")):
        if phase not in results:
            continue
        r = results[phase]
        load = f"{r['offered_per_s']:,.0f}/s offered" if r["offered_per_s"] else "max load"
        table.add_row(f"webhooks accepted/s ({layout}, {load})", f"{r['accepted_per_s']:,.0f}", "")
        table.add_row(f"  accept p50 / p99 ms, refused ({layout})", f"{r['accept_p50_ms']:.1f} / "
                      f"{r['accept_p99_ms']:.1f}, {r['refused']:,}", "")  # fmt: skip
        table.add_row(
            f"LMS writes/s sustained over {args.duration:.0f} s ({layout})",
            f"{r['written_per_s_in_window']:,.0f}",
            ">= 1,000",
        )
        table.add_row(f"  accepted but not yet written at the end ({layout})", f"{r['backlog_at_end']:,}", "")
        table.add_row(f"LMS writes/s including drain ({layout})", f"{r['written_per_s_overall']:,.0f}", "")
        counts = f"{r['accepted']:,} / {r['written']:,}"
        table.add_row(f"events accepted (wrk) / written ({layout})", counts, "written >= accepted")
        cpu = ", ".join(f"{name} {pct:.0f}" for name, pct in r["cpu_pct"].items())
        table.add_row(f"  % of a core during the load ({layout})", cpu, "")
    if "latency" in results:
        r = results["latency"]
        table.add_row("latency at 100/s p50 (ms)", f"{r['p50_ms']:.1f}", "<= 20")
        table.add_row("latency at 100/s p99 (ms)", f"{r['p99_ms']:.1f}", "<= 100")
        table.add_row("events sent / written", f"{r['events']:,} / {r['written']:,}", "equal")
        behind = f"{r['over_100_ms']:,} / {r['over_100_ms_behind_disk']:,}"
        table.add_row("  written after over 100 ms / of them while the disk stalled", behind, "")
        disk = f"{r['disk_slowest_ms']:.0f} ({r['disk_stalls']} of {r['disk_syncs']:,} over 50 ms)"
        table.add_row("  the disk's slowest fdatasync during the run (ms)", disk, "")
    if "drain" in results:
        r = results["drain"]
        table.add_row(f"serve peak RSS while queueing {r['queued']:,} (MB)", f"{r['serve_rss_mb']:.0f}", "<= 120")
        table.add_row(f"worker drain events/s (over {r['drain_seconds']:.0f} s)", f"{r['drain_per_s']:,.0f}", "")
        table.add_row("  worker CPU per event, first write to last (us)", f"{r['worker_cpu_us_per_event']:,.0f}", "")
        if r["serve_instructions_per_event"]:
            counted = f"{r['serve_instructions_per_event']:,.0f}"
            table.add_row("  serve instructions per webhook queued (callgrind)", counted, "")
        if r["worker_instructions_per_event"]:
            counted = f"{r['worker_instructions_per_event']:,.0f}"
            table.add_row("  worker instructions per event (callgrind)", counted, "")
        table.add_row(
            "  RabbitMQ CPU per event: queueing / draining (us)",
            f"{r['broker_cpu_us_queueing']:,.0f} / {r['broker_cpu_us_draining']:,.0f}",
            "",
        )
        table.add_row(f"worker peak RSS draining {r['queued']:,} (MB)", f"{r['worker_rss_mb']:.0f}", "<= 150")
        if r["after_seconds"]:
            table.add_row(
                f"worker peak RSS to {r['after_seconds']:.0f} s after the drain (MB), StackOne GETs then",
                f"{r['worker_rss_after_mb']:.0f}, {r['listings_after']:,}",
                "<= 150",
            )
        table.add_row("events queued / drained", f"{r['queued']:,} / {r['drained']:,}", "equal")
    console.print(table)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections (throughput, split)")
    parser.add_argument("--rate", type=float, default=0.0, help="pace throughput and split at this many a second")
    parser.add_argument("--drain-for", type=float, default=1800.0, help="stop the drain after this many seconds")
    parser.add_argument(
        "--after", type=float, default=0.0, help="drain: keep the worker so long once drained, measuring its peak"
    )
    parser.add_argument("--phases", default="throughput,split,latency,drain")
    parser.add_argument("--log-level", default="warning", help="the lmsbridge processes' log level (production: info)")
    parser.add_argument("--logs", type=Path, help="keep each lmsbridge process's log lines in this folder")
    parser.add_argument("--profile", type=Path, help="py-spy the split phase's worker; stacks kept in this folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the split phase (one database)")
    parser.add_argument(
        "--callgrind", action="store_true", help="drain: serve's and worker's instructions an event (valgrind, slow)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of serve and worker (a venv's python with lmsbridge); the stand-in stays on this one",
    )
    args = parser.parse_args()
    if args.callgrind and args.phases != "drain":  # elsewhere it would slow the processes and count nothing
        parser.error("--callgrind counts only in the drain phase: give --phases drain")
    global LOGS, PROFILE, LOG_LEVEL, WORKERS, CALLGRIND, PYTHON
    CALLGRIND = args.callgrind
    PYTHON = args.python
    LOGS = args.logs
    LOG_LEVEL = args.log_level
    PROFILE = args.profile
    WORKERS = args.workers
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
