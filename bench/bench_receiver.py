"""Receiver benchmark: signed webhooks through `lmsbridge serve` against its two ceilings.

Measures, in one run on this machine:
1. RabbitMQ's raw confirmed-publish rate from one aio-pika process (persistent messages to a
   quorum queue, many in flight);
2. a bare aiohttp server that only answers 202;
3. `lmsbridge serve` with real signature verification, validation and confirmed publishing,
   each request with its own message id.

The load generator is wrk (Debian package `wrk`) with a Lua script that replays pre-signed
requests; its CPU use is reported so it can be seen not to be the bottleneck.

    .venv/bin/python bench/bench_receiver.py [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
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
local lines = {}
local counter = 0
local thread_index = 0
local threads = 1
local body = ""

function setup(thread)
  thread:set("thread_index", thread_index)
  thread_index = thread_index + 1
end

function init(args)
  threads = tonumber(args[2])
  local f = io.open(args[1], "r")
  body = f:read("*l")
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  counter = thread_index
end

function request()
  local line = lines[(counter % #lines) + 1]
  counter = counter + threads
  local id, ts, sig = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)")
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
  }, body)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_publish(n: int, window: int) -> float:
    """Confirmed persistent publishes per second to a fresh quorum queue, ``window`` in flight."""
    name = f"bench-raw-{uuid.uuid4().hex[:6]}"
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

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - started
        await queue.delete(if_unused=False, if_empty=False)
    return n / elapsed


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def run_wrk(url: str, requests_file: Path, script: Path, *, duration: int, connections: int) -> dict[str, float]:
    threads = 2
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url,
         "--", str(requests_file), str(threads)],
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
    }


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--raw-messages", type=int, default=30_000)
    parser.add_argument("--processes", type=int, default=1, help="`lmsbridge serve` processes sharing the port")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_receiver: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    console = Console()
    raw = asyncio.run(raw_publish(args.raw_messages, window=512))
    console.print(f"raw confirmed publish: {raw:,.0f} msg/s")
    with tempfile.TemporaryDirectory(prefix="lmsbridge-bench-") as tmp:
        tmpdir = Path(tmp)
        script = tmpdir / "replay.lua"
        script.write_text(LUA)
        requests_file = tmpdir / "requests.tsv"
        presign(requests_file, 400_000)

        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
        try:
            wait_port(port)
            bare_result = run_wrk(f"http://127.0.0.1:{port}/webhooks/bench", requests_file, script,
                                  duration=args.duration, connections=args.connections)  # fmt: skip
        finally:
            bare.terminate()
            bare.wait()

        port = free_port()
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        config = tmpdir / "serve.toml"
        serve_config(config, port, prefix)
        env = {**os.environ, "LMSBRIDGE_CONFIG": str(config)}
        if args.processes > 1:
            env["LMSBRIDGE_RECEIVER__REUSE_PORT"] = "true"
        servers = [
            subprocess.Popen(
                [sys.executable, "-m", "lmsbridge.cli", "--log-level", "warning", "--log-format", "json", "serve"],
                env=env,
            )
            for _ in range(args.processes)
        ]
        try:
            wait_port(port)
            time.sleep(1.0 + args.processes)
            serve_result = run_wrk(f"http://127.0.0.1:{port}/webhooks/bench", requests_file, script,
                                   duration=args.duration, connections=args.connections)  # fmt: skip
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait()
        queued = asyncio.run(cleanup(prefix))

    table = Table(title=f"Receiver, {args.connections} connections, {args.duration}s, {os.cpu_count()} cores")
    for column in ("server", "accepted/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "errors", "wrk CPU %"):
        table.add_column(column, justify="right")
    table.add_row("raw confirmed publish (aio-pika)", f"{raw:,.0f}", "-", "-", "-", "-", "-", "-")
    serve_name = "lmsbridge serve" + (f" x {args.processes}" if args.processes > 1 else "")
    for name, r in (("bare aiohttp 202", bare_result), (serve_name, serve_result)):
        table.add_row(
            name, f"{r['rps']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}",
            f"{r['non2xx']:,.0f}", f"{r['errors']:,.0f}", f"{r['wrk_cpu_pct']:.0f}",
        )  # fmt: skip
    console.print(table)
    accepted = serve_result["requests"] - serve_result["non2xx"] - serve_result["errors"]
    console.print(
        f"lmsbridge / raw publish = {serve_result['rps'] / raw:.2f} (target >= 0.90); "
        f"p99 {serve_result['p99_ms']:.1f} ms (target <= 20); "
        f"messages queued {queued:,} for {accepted:,.0f} accepted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
