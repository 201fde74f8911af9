"""Receiver benchmark: signed webhooks through `lmsbridge serve` against its two ceilings.

Measures, in one run on this machine:
1. RabbitMQ's raw confirmed-publish rate from one aio-pika process (persistent messages to a
   quorum queue, many in flight);
2. a bare aiohttp server that only answers 202, and a plain one that publishes the body with
   confirms through aiormq and answers 202 (no checks, logs or metrics: the least a receiver on
   this stack can do);
3. `lmsbridge serve` with real signature verification, validation and confirmed publishing,
   each request with its own message id, logging at ``--log-level`` (info, as in production;
   its JSON lines go to a file);
4. the same serve paced at half of its saturation rate, for the latency target there, and the
   plain receiver paced at that rate too (its p99 is the floor under the serve's); beside each
   paced run a thread times an ``fdatasync`` every 20 ms, and the summary gives the slowest (a
   stall of the disk holds RabbitMQ's confirms, and every webhook in flight, as long);
5. the serve process's peak RSS (``VmHWM``).

``--baseline SRC`` runs a second serve from another source tree (``git archive HEAD src | tar
-x -C /tmp/base``) in the same run, so before and after are measured back to back on one
machine (``--baseline-last`` swaps the order; ``--tree LABEL=SRC ...`` measures any number of
trees in turn; ``--pace RATE`` skips saturation and only paces each at RATE). The serve's CPU
time per request is the figure least moved by other load on a shared machine. ``--profile DIR``
samples each serve under saturation with py-spy (a dev tool, not a dependency: ``pip install
py-spy``) and prints the top frames by share.

The load generator is wrk (Debian package `wrk`) with a Lua script that replays pre-signed
requests; its CPU use is reported so it can be seen not to be the bottleneck.

    .venv/bin/python bench/bench_receiver.py [--duration 10] [--connections 64] [--baseline SRC]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import orjson
from rich.console import Console
from rich.table import Table

from lmsbridge.testing.webhooks import exec_assignment, exec_event
from lmsbridge.vendors import build_signer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AMQP = os.environ.get("LMSBRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

LUA = r"""
local ffi = require("ffi") -- Debian's wrk is built on LuaJIT: its clock paces the requests
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lmsbridge_timespec;
int clock_gettime(int clock, lmsbridge_timespec *now);
]]
local clock = ffi.new("lmsbridge_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local lines = {}
local counter = 0
thread_index = 0 -- a global: setup() sets it in each thread's own Lua state with thread:set
local threads = 1
local body = ""
local interval = 0 -- milliseconds between this thread's requests; 0: as fast as its connections go
local due = nil

function setup(thread)
  thread:set("thread_index", thread_index)
  thread_index = thread_index + 1
end

function init(args)
  threads = tonumber(args[2])
  local rate = tonumber(args[3] or "0")
  if rate > 0 then interval = 1000 * threads / rate end
  local f = io.open(args[1], "r")
  body = f:read("*l")
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  counter = thread_index + tonumber(args[4] or "0")
end

function request()
  local line = lines[(counter % #lines) + 1]
  counter = counter + threads
  -- A fourth field is the request's own body (bench_pipeline: every event a new record).
  local id, ts, sig, own = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t?(.*)")
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
  }, own ~= "" and own or body)
end

-- Paced runs (args[3] = requests a second, shared evenly by the threads): each request has its
-- slot on a fixed schedule, whenever the previous answers came, so the offered rate is the rate
-- asked for (a pause after each answer would offer less the slower the server answers). Slots
-- missed while every connection waited are sent as soon as a connection is free.
function delay()
  if interval <= 0 then return 0 end
  local now = now_ms()
  local slot = due or now
  due = slot + interval
  return math.max(0, slot - now)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %.3f %.3f %.3f\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""

BARE_SERVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.json_response({"id": "x", "status": "accepted"}, status=202)
app = web.Application()
app.router.add_post("/webhooks/{source}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

PLAIN = Path(__file__).with_name("plain_receiver.py")
"""A plain aiohttp + aiormq receiver; its level adds lmsbridge's steps one by one (see its docstring)."""
LEVELS = ("plain", "+ signature", "+ parse and validate", "+ lmsbridge's message", "+ a log line", "+ metrics")


def measure_plain(
    level: int, requests_file: Path, script: Path, args: argparse.Namespace, offset: int = 0, rate: float = 0.0
) -> dict[str, float]:
    """Saturate the plain receiver at ``level`` (its CPU a request and share of a core added to wrk's figures).

    ``rate``: pace it instead, with the connections a paced serve gets (:func:`pace_connections`).
    """
    port = free_port()
    plain = subprocess.Popen(
        [sys.executable, str(PLAIN), AMQP, str(port), str(level), SECRET], stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        time.sleep(1.0)
        quiet_broker()
        before = cpu_seconds(plain.pid)
        connections = pace_connections(rate) if rate else args.connections
        result = run_wrk(f"http://127.0.0.1:{port}/webhooks/bench", requests_file, script,
                         duration=args.duration, connections=connections, rate=rate, offset=offset)  # fmt: skip
        used = cpu_seconds(plain.pid) - before
    finally:
        plain.terminate()
        plain.wait()
    return charge_cpu(result, used, args.duration)


def ladder(console: Console, raw: float, requests_file: Path, script: Path, args: argparse.Namespace) -> None:
    """Each level of the plain receiver, up then down (so drift over the run falls on both sides)."""
    order = [*range(len(LEVELS)), *reversed(range(len(LEVELS)))]
    runs: dict[int, list[dict[str, float]]] = {level: [] for level in range(len(LEVELS))}
    offset = 0
    for level in order:
        result = measure_plain(level, requests_file, script, args, offset=offset)
        offset += 2 * (int(result["requests"]) + args.connections)
        runs[level].append(result)
    table = Table(title=f"A plain receiver, lmsbridge's steps added one by one ({args.connections} connections)")
    for column in ("level", "accepted/s (two runs)", "/ raw", "CPU us/req (two runs)", "added us/req", "CPU %"):
        table.add_column(column, justify="right")
    previous = None
    for level, name in enumerate(LEVELS):
        rates = [r["rps"] for r in runs[level]]
        costs = [r["cpu_us"] for r in runs[level]]
        cost = sum(costs) / len(costs)
        table.add_row(
            f"{level} {name}",
            " / ".join(f"{x:,.0f}" for x in rates),
            f"{sum(rates) / len(rates) / raw:.2f}",
            " / ".join(f"{x:.0f}" for x in costs),
            "" if previous is None else f"{cost - previous:+.0f}",
            " / ".join(f"{r['cpu_pct']:.0f}" for r in runs[level]),
        )
        previous = cost
    console.print(table)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rabbitmq_pid() -> int | None:
    """The local RabbitMQ node's process (beam.smp), if this machine runs one."""
    found = subprocess.run(["pgrep", "-o", "beam.smp"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def quiet_broker(limit_pct: float = 15.0, longest: float = 30.0) -> None:
    """Wait until RabbitMQ uses less than ``limit_pct`` of a core (at most ``longest`` seconds).

    A queue deleted with tens of thousands of messages keeps the broker busy for seconds after:
    a run started then shares the cores with that clean-up and measures slower than the one before.
    """
    broker = rabbitmq_pid()
    if broker is None:
        return
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before, started = cpu_seconds(broker), time.monotonic()
        time.sleep(0.5)
        if 100 * (cpu_seconds(broker) - before) / (time.monotonic() - started) < limit_pct:
            return


@dataclass
class RawPublish:
    """Confirmed publishes a second, and the CPU each cost the publisher and RabbitMQ."""

    rate: float
    publisher_us: float
    broker_us: float


async def raw_publish(n: int, window: int) -> RawPublish:
    """Confirmed persistent publishes per second to a fresh quorum queue, ``window`` in flight."""
    name = f"bench-raw-{uuid.uuid4().hex[:6]}"
    broker = rabbitmq_pid()
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        body = b"x" * 900
        gate = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with gate:
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(i))
                await channel.default_exchange.publish(message, routing_key=name)

        own, theirs = time.process_time(), cpu_seconds(broker) if broker else 0.0
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        own, theirs = time.process_time() - own, (cpu_seconds(broker) - theirs) if broker else float("nan")
        await queue.delete(if_unused=False, if_empty=False)
    return RawPublish(n / elapsed, 1e6 * own / n, 1e6 * theirs / n)


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class DiskProbe:
    """A thread writing 4 KiB and ``fdatasync``-ing it every 20 ms in ``folder`` (the SQLite file's;
    RabbitMQ's data too where they share a disk): when the disk stalls, so does every commit and
    every publisher confirm behind it, and a latency's p99 shows the disk as much as lmsbridge."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "disk-probe.dat"
        self._stop = threading.Event()
        self.syncs: list[tuple[float, float]] = []  # (perf_counter at its start, seconds it took)
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)

    def _run(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while not self._stop.wait(0.02):
                os.pwrite(fd, b"x" * 4096, 0)
                began = time.perf_counter()
                os.fdatasync(fd)
                self.syncs.append((began, time.perf_counter() - began))
        finally:
            os.close(fd)

    def __enter__(self) -> DiskProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def slowest_ms(self) -> float:
        """The slowest sync, in milliseconds (0 when none was made)."""
        return 1000 * max((took for _, took in self.syncs), default=0.0)

    def stalls(self, over: float) -> list[tuple[float, float]]:
        """The syncs that took longer than ``over`` seconds, as (start, end)."""
        return [(began, began + took) for began, took in self.syncs if took > over]


def run_wrk(
    url: str,
    requests_file: Path,
    script: Path,
    *,
    duration: int,
    connections: int,
    rate: float = 0,
    offset: int = 0,
) -> dict[str, float]:
    """One wrk run, paced at ``rate`` requests a second (0: as fast as the connections go);
    ``offset`` skips request lines used before."""
    threads = 2
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    disk = DiskProbe(requests_file.parent)
    with contextlib.ExitStack() as stack:
        if rate:  # a paced run's p99 shows the disk's stalls too (a saturated run goes unprobed, as before)
            stack.enter_context(disk)
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url,
             "--", str(requests_file), str(threads), f"{rate:.3f}", str(offset)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    total, bad, errors, micros, p50, p99, worst = line.split()[1:]
    seconds = float(micros) / 1e6
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests": float(total),
        "non2xx": float(bad),
        "errors": float(errors),
        "rps": (float(total) - float(bad) - float(errors)) / seconds,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(worst),
        "wrk_cpu_pct": 100 * cpu / seconds,
        "disk_slowest_ms": disk.slowest_ms(),
    }


def pace_connections(rate: float) -> int:
    """Connections for a paced run: each sends at most 50 a second (one every 20 ms).

    A connection waits for each answer, and an answer waits up to a publish window plus its
    confirm, so 16 could not offer more than ~1,800 a second.
    """
    return max(16, math.ceil(rate / 50))


def presign(path: Path, n: int) -> bytes:
    """A body and ``n`` (id, timestamp, signature) lines, each request with its own message id."""
    signer = build_signer("standard-webhooks", SECRET)
    body = orjson.dumps(exec_event("assignment.created", exec_assignment("bench-1", "jane@acme.example")))
    ts = int(time.time())
    with path.open("w") as f:
        f.write(body.decode() + "\n")
        for _ in range(n):
            mid = f"msg_{uuid.uuid4().hex}"
            headers = signer.sign(body, message_id=mid, timestamp=ts)
            f.write(f"{mid}\t{ts}\t{headers['webhook-signature']}\n")
    return body


def serve_config(path: Path, port: int, prefix: str) -> None:
    path.write_text(
        textwrap.dedent(
            f"""
            amqp_url = "{AMQP}"
            database_url = "sqlite+aiosqlite:///{path.parent / "bench.db"}"
            [receiver]
            host = "127.0.0.1"
            port = {port}
            [broker]
            prefix = "{prefix}"
            [sources.bench]
            platform = "exec"
            secrets = ["{SECRET}"]
            accounts = ["acc-bench"]
            """
        )
    )


async def cleanup(prefix: str) -> int:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.events.bench", passive=True)
        queued = int(queue.declaration_result.message_count or 0)
        for suffix in ["events", "events.bench", "dead", "sync.acc-bench", *[f"delay.{i}" for i in range(8)]]:
            await channel.queue_delete(f"{prefix}.{suffix}")
        for exchange in (prefix, f"{prefix}.delay", f"{prefix}.dead"):
            await channel.exchange_delete(exchange)
    return queued


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def charge_cpu(result: dict[str, float], cpu: float, seconds: float) -> dict[str, float]:
    """``result`` (a wrk run's) with the server's ``cpu`` seconds added: a request's, and its share of a core."""
    result["cpu_us"] = 1e6 * cpu / max(1.0, result["requests"])
    result["cpu_pct"] = 100 * cpu / seconds
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _where(frame: str) -> tuple[str, str]:
    """(function, package) of one py-spy frame ``name (package/module.py:line)``."""
    name, _, rest = frame.partition(" (")
    path = rest.rsplit(":", 1)[0]
    parts = path.split("/")
    if parts[0] == "lmsbridge" and len(parts) > 2:
        package = f"lmsbridge.{parts[1]}"
    elif len(parts) > 1:
        package = parts[0]
    else:
        package = path.strip("<>")
    return f"{name} ({parts[-1]})", package


def summarise_profile(raw: Path, top: int = 12) -> list[str]:
    """Top frames of a py-spy ``--format raw`` profile: by own share, by package, by inclusive share."""
    own: dict[str, int] = {}
    packages: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        function, package = _where(frames[-1])
        own[function] = own.get(function, 0) + count
        packages[package] = packages.get(package, 0) + count
        for function in {_where(f)[0] for f in frames}:
            inclusive[function] = inclusive.get(function, 0) + count
    if not total:
        return ["(no samples)"]

    def ranked(counts: dict[str, int]) -> str:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return "; ".join(f"{name} {100 * n / total:.1f}%" for name, n in best)

    return [
        f"samples {total}",
        f"own: {ranked(own)}",
        f"package (own): {ranked(packages)}",
        f"inclusive: {ranked(inclusive)}",
    ]


@dataclass
class ServeRun:
    """One serve's figures: saturated, then paced at half that rate."""

    label: str
    saturated: dict[str, float]
    paced: dict[str, float]
    half: float
    rss_mb: float
    accepted: float = 0
    queued: int = 0
    profile: list[str] = field(default_factory=list)


def measure_serve(label: str, src: Path | None, tmpdir: Path, script: Path, args: argparse.Namespace) -> ServeRun:
    """Saturate one (or ``--processes``) serve, then pace it at half that rate; RSS and profile too."""
    requests_file = tmpdir / f"requests-{label}.tsv"
    presign(requests_file, 400_000)
    port = free_port()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    config = tmpdir / f"serve-{label}.toml"
    serve_config(config, port, prefix)
    env = {**os.environ, "LMSBRIDGE_CONFIG": str(config)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if args.processes > 1:
        env["LMSBRIDGE_RECEIVER__REUSE_PORT"] = "true"
    command = [sys.executable, "-m", "lmsbridge.cli", "--log-level", args.log_level, "--log-format", "json", "serve"]
    url = f"http://127.0.0.1:{port}/webhooks/bench"
    with (tmpdir / f"serve-{label}.log").open("wb") as log:
        servers = [subprocess.Popen(command, env=env, stderr=log) for _ in range(args.processes)]
        try:
            wait_port(port)
            time.sleep(1.0 + args.processes)
            # Each wrk thread takes every other line from the offset on: skip twice what a run took,
            # so no later run repeats an id (the receiver would answer a repeat without publishing).
            used = 0
            quiet_broker()

            def serves_cpu() -> float:
                return sum(cpu_seconds(server.pid) for server in servers)

            cpu_before = serves_cpu()
            first_for = 2 if args.pace else args.duration
            if args.pace:
                saturated = run_wrk(url, requests_file, script, duration=first_for, connections=4, rate=args.pace)
            else:
                saturated = run_wrk(url, requests_file, script, duration=first_for, connections=args.connections)
            charge_cpu(saturated, serves_cpu() - cpu_before, first_for)
            used += 2 * (int(saturated["requests"]) + args.connections)
            half = args.pace or saturated["rps"] / 2
            connections = pace_connections(half)
            cpu_before = serves_cpu()
            paced = run_wrk(url, requests_file, script, duration=args.duration, connections=connections,
                            rate=half, offset=used)  # fmt: skip
            charge_cpu(paced, serves_cpu() - cpu_before, args.duration)
            used += 2 * (int(paced["requests"]) + connections)
            profile: list[str] = []
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                raw = args.profile / f"serve-{label}.txt"
                spy = subprocess.Popen(
                    [str(_py_spy()), "record", "--pid", str(servers[0].pid), "--duration", str(args.duration),
                     "--rate", "250", "--format", "raw", "--output", str(raw), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                profiled = run_wrk(
                    url, requests_file, script, duration=args.duration, connections=args.connections, offset=used
                )
                spy.wait()
                profile = summarise_profile(raw) if raw.exists() else ["(py-spy wrote nothing)"]
            run = ServeRun(label, saturated, paced, half, max(peak_rss_mb(server.pid) for server in servers))
            run.profile = profile
            for r in (saturated, paced, *([profiled] if args.profile is not None else [])):
                run.accepted += r["requests"] - r["non2xx"] - r["errors"]
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait()
    run.queued = asyncio.run(cleanup(prefix))
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--raw-messages", type=int, default=30_000)
    parser.add_argument("--processes", type=int, default=1, help="`lmsbridge serve` processes sharing the port")
    parser.add_argument("--log-level", default="info", help="the serve's log level (its JSON lines go to a file)")
    parser.add_argument("--baseline", type=Path, help="also run serve from this source tree (its src/ directory)")
    parser.add_argument(
        "--current", type=Path, help="run the 'current' serve from this source tree, not the installed one"
    )
    parser.add_argument("--baseline-last", action="store_true", help="measure the baseline after the current serve")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="LABEL=SRC", help="serve from these trees, in order"
    )
    parser.add_argument("--pace", type=float, help="skip saturation: only the paced run, at this rate")
    parser.add_argument("--profile", type=Path, help="py-spy each serve under saturation; raw profiles go here")
    parser.add_argument(
        "--ladder", action="store_true", help="only the plain receiver, adding lmsbridge's steps one level at a time"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_receiver: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    if args.profile is not None and _py_spy() is None:
        print("bench_receiver: --profile needs py-spy on PATH (pip install py-spy)", file=sys.stderr)
        return 2
    console = Console(width=200)
    first = asyncio.run(raw_publish(args.raw_messages, window=512))
    console.print(f"raw confirmed publish: {first.rate:,.0f} msg/s")
    with tempfile.TemporaryDirectory(prefix="lmsbridge-bench-") as tmp:
        tmpdir = Path(tmp)
        script = tmpdir / "replay.lua"
        script.write_text(LUA)
        requests_file = tmpdir / "requests.tsv"
        presign(requests_file, 100_000)

        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
        try:
            wait_port(port)
            bare_cpu = cpu_seconds(bare.pid)
            bare_result = run_wrk(f"http://127.0.0.1:{port}/webhooks/bench", requests_file, script,
                                  duration=args.duration, connections=args.connections)  # fmt: skip
            bare_result["cpu_us"] = 1e6 * (cpu_seconds(bare.pid) - bare_cpu) / max(1.0, bare_result["requests"])
        finally:
            bare.terminate()
            bare.wait()
        plain_result = measure_plain(0, requests_file, script, args)
        if args.ladder:  # the plain receivers keep no ids: a repeated one is published again
            ladder(console, first.rate, requests_file, script, args)
            return 0

        order: list[tuple[str, Path | None]] = [("current", args.current)]
        if args.baseline is not None:
            order.insert(len(order) if args.baseline_last else 0, ("baseline", args.baseline))
        if args.tree:
            order = [(label, Path(src)) for label, _, src in (tree.partition("=") for tree in args.tree)]
        runs = [measure_serve(label, src, tmpdir, script, args) for label, src in order]
        # The plain receiver paced as the first serve was: its p99 is what this machine and RabbitMQ
        # give a receiver doing nothing else at that rate, the floor under the serve's.
        plain_paced = measure_plain(0, requests_file, script, args, rate=runs[0].half) if runs else None
        again = asyncio.run(raw_publish(args.raw_messages, window=512))
    console.print(f"raw confirmed publish again: {again.rate:,.0f} msg/s")
    raw_mean = (first.rate + again.rate) / 2

    title = f"Receiver, {args.connections} connections, {args.duration}s, {os.cpu_count()} cores, log {args.log_level}"
    table = Table(title=title)
    columns = ("server", "accepted/s", "/ raw", "p50 ms", "p99 ms", "max ms", "non-2xx", "errors", "wrk CPU %")
    for column in (*columns, "serve CPU %", "CPU us/req", "RSS MiB"):
        table.add_column(column, justify="right")
    table.add_row("raw confirmed publish (aio-pika), mean of 2", f"{raw_mean:,.0f}", "1.00", *["-"] * 9)
    table.add_row(*_row("bare aiohttp 202", bare_result, raw_mean), "-", f"{bare_result['cpu_us']:.0f}", "-")
    table.add_row(
        *_row("plain aiohttp + aiormq confirmed publish", plain_result, raw_mean),
        f"{plain_result['cpu_pct']:.0f}",
        f"{plain_result['cpu_us']:.0f}",
        "-",
    )
    suffix = f" x {args.processes}" if args.processes > 1 else ""
    for run in runs:
        sat = run.saturated
        table.add_row(
            *_row(f"serve{suffix} ({run.label})", sat, raw_mean),
            f"{sat['cpu_pct']:.0f}",
            f"{sat['cpu_us']:.0f}",
            f"{run.rss_mb:.0f}",
        )
        paced = run.paced
        table.add_row(
            *_row(f"  paced at {run.half:,.0f}/s", paced, raw_mean),
            f"{paced['cpu_pct']:.0f}",
            f"{paced['cpu_us']:.0f}",
            "",
        )
    if plain_paced is not None:
        table.add_row(
            *_row(f"plain, paced at {runs[0].half:,.0f}/s", plain_paced, raw_mean),
            f"{plain_paced['cpu_pct']:.0f}",
            f"{plain_paced['cpu_us']:.0f}",
            "-",
        )
    console.print(table)
    for run in runs:
        saturated, paced = run.saturated, run.paced
        console.print(
            f"{run.label}: serve / raw publish = {saturated['rps'] / raw_mean:.2f} (target >= 0.90, one process"
            f" >= 0.50); p99 at half saturation {paced['p99_ms']:.1f} ms (target <= 20; the disk's slowest"
            f" fdatasync meanwhile {paced['disk_slowest_ms']:.0f} ms); RSS {run.rss_mb:.0f} MiB"
            f" (target <= 120); messages queued {run.queued:,} for {run.accepted:,.0f} accepted (all its wrk runs)"
        )
        for line in run.profile:
            console.print(f"  py-spy {run.label}: {line}", soft_wrap=True)
    if plain_paced is not None:
        console.print(
            f"plain receiver paced at {runs[0].half:,.0f}/s: p50 {plain_paced['p50_ms']:.1f} ms, p99"
            f" {plain_paced['p99_ms']:.1f} ms (the confirm's wait and this machine's, under any receiver; the"
            f" disk's slowest fdatasync meanwhile {plain_paced['disk_slowest_ms']:.0f} ms)"
        )
    print_floor(
        console,
        first,
        again,
        bare_result,
        [("plain", plain_result["cpu_us"])] + [(run.label, run.saturated["cpu_us"]) for run in runs],
    )
    return 0


def print_floor(
    console: Console, first: RawPublish, again: RawPublish, bare: dict[str, float], servers: list[tuple[str, float]]
) -> None:
    """What one accepted webhook costs at the least, in CPU, with the parts it cannot do without.

    Each part is measured at its own best (RabbitMQ and the publisher at 512 in flight, aiohttp
    answering a bare 202), so the sum is a lower bound: on a machine with ``cores`` cores nothing
    built from these parts accepts more than ``cores / sum`` a second while the load generator
    and RabbitMQ share those cores.
    """
    cores = os.cpu_count() or 1
    raw = (first.rate + again.rate) / 2
    broker = (first.broker_us + again.broker_us) / 2
    publisher = (first.publisher_us + again.publisher_us) / 2
    wrk = 1e6 * bare["wrk_cpu_pct"] / 100 / max(1.0, bare["rps"])
    floor = bare["cpu_us"] + wrk + publisher + broker
    console.print(
        f"CPU per message: RabbitMQ {broker:.0f} us, the raw publisher (aio-pika) {publisher:.0f} us;"
        f" bare aiohttp {bare['cpu_us']:.0f} us a request, wrk {wrk:.0f} us a request"
    )
    console.print(
        f"floor: a webhook costs at least {floor:.0f} us of CPU with these parts: {cores} cores accept at most"
        f" {cores * 1e6 / floor:,.0f}/s = {cores * 1e6 / floor / raw:.2f} x raw"
    )
    for label, cpu_us in servers:
        per = cpu_us + wrk + broker
        console.print(
            f"{label}: {cpu_us:.0f} us a request + wrk + RabbitMQ = {per:.0f} us a webhook: {cores} cores,"
            f" any number of processes, accept at most {cores * 1e6 / per:,.0f}/s = {cores * 1e6 / per / raw:.2f} x raw"
        )


def _py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def _row(name: str, r: dict[str, float], raw: float) -> list[str]:
    return [
        name, f"{r['rps']:,.0f}", f"{r['rps'] / raw:.2f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
        f"{r['max_ms']:.1f}", f"{r['non2xx']:,.0f}", f"{r['errors']:,.0f}", f"{r['wrk_cpu_pct']:.0f}",
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
