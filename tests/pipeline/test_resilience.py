"""Operations under stress: SIGTERM mid-batch and a RabbitMQ restart lose nothing.

The sender behaves like a platform: it retries a delivery (same message id) until it gets
a 2xx. Afterwards every accepted event must be in the LMS stand-in exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from lmsbridge.errors import InfrastructureFault
from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import WebhookSender, exec_assignment, exec_event
from tests.pipeline.conftest import ACCOUNT, SECRET, SettingsFactory, settled

Start = Callable[..., Awaitable[Runtime]]


def batch(n: int, people: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``n`` Exec events for distinct assignments: (message id, envelope)."""
    out = []
    for i in range(n):
        assignment = exec_assignment(f"r{i:04d}", people[i % len(people)], scenario=f"scn-{i}", name=f"Scenario {i}")
        envelope = exec_event("assignment.created", assignment, event_id=f"evt_{i}")
        out.append((f"msg_{i}", envelope))
    return out


async def deliver(
    sender: WebhookSender, source: str, message_id: str, envelope: dict[str, Any], statuses: Counter[int]
) -> None:
    """POST until a 2xx, like a platform retrying; counts every status seen."""
    body = orjson.dumps(envelope)
    assert sender.session is not None
    for _ in range(400):
        try:
            async with sender.session.post(
                f"{sender.base_url}/webhooks/{source}", data=body, headers=sender.sign(body, message_id=message_id)
            ) as response:
                statuses[response.status] += 1
                if response.status < 300:
                    return
        except aiohttp.ClientError:
            statuses[0] += 1
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} was never accepted")


def write_config(path: Path, settings: Settings, port: int) -> None:
    """A TOML file equivalent to ``settings`` (for a subprocess), with a fixed receiver port.

    The sync lease is the test settings' short one: a create still in flight when the drain
    timeout stops a process keeps its record leased (StackOne may yet write it), and a restart
    then waits out that lease before it lists and writes; 120 s by default, longer than a test
    waits."""
    src = settings.sources["acme-sales"]
    path.write_text(
        f"""
amqp_url = "{settings.amqp_url.get_secret_value()}"
database_url = "{settings.database_url.get_secret_value()}"
[receiver]
host = "127.0.0.1"
port = {port}
[stackone]
base_url = "{settings.stackone.base_url}"
api_key = "{settings.stackone.api_key.get_secret_value()}"
timeout = {settings.stackone.timeout}
[broker]
prefix = "{settings.broker.prefix}"
retry_delays = [0.2, 0.4, 0.8]
[worker]
metrics_port = 0
drain_timeout = 10
sync_lease_seconds = {settings.worker.sync_lease_seconds}
[sources.acme-sales]
platform = "exec"
secrets = ["{SECRET}"]
accounts = {orjson.dumps(src.accounts).decode()}
"""
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline:
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("lmsbridge did not become ready")


async def test_sigterm_mid_batch_then_restart_delivers_everything_once(
    make_settings: SettingsFactory, stackone: StackOneStandIn, tmp_path: Path, start_runtime: Start
) -> None:
    """SIGTERM to `lmsbridge run` during a batch, then a restart: every event reaches the LMS once."""
    people = [f"p{i}@acme.example" for i in range(10)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings()
    port = free_port()
    config = tmp_path / "run.toml"
    write_config(config, settings, port)
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "lmsbridge.cli", "--config", str(config), "--log-format", "json", "run"]
    events = batch(120, people)
    statuses: Counter[int] = Counter()
    log = (tmp_path / "lmsbridge.log").open("ab")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        await wait_ready(url)
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(url, SECRET, session=session)
            sending = asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events))
            await asyncio.sleep(0.4)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 60) == 0
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            await wait_ready(url)
            await sending
        # Let the restarted process drain; then check the ledger from an in-process view of the same database.
        runtime = await start_runtime(settings, receiver=False)
        counts = await settled(runtime, timeout=60)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 60)
        log.close()
    assert counts == {ACCOUNT: {"synced": len(events)}}
    assert_once(stackone, len(events))
    assert statuses[202] == len(events)


def assert_once(stackone: StackOneStandIn, expected: int) -> None:
    """Every event's assignment is in the LMS stand-in exactly once, and every request was on the spec."""
    written = Counter(
        (a["user_id"], a["body"]["learning_object_external_reference"]) for a in stackone.assignments(ACCOUNT)
    )
    assert len(written) == expected
    assert set(written.values()) == {1}
    assert stackone.violations == []


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.serial  # stops RabbitMQ for every test running beside it
async def test_rabbitmq_restart_gives_503s_then_recovers_with_nothing_lost(
    make_settings: SettingsFactory, stackone: StackOneStandIn, start_runtime: Start
) -> None:
    """RabbitMQ stopped and started during a batch: 503 while down, then recovery, every event once."""
    people = [f"q{i}@acme.example" for i in range(10)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    runtime = await start_runtime(make_settings())
    url = f"http://127.0.0.1:{runtime.port}"
    events = batch(80, people)
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(url, SECRET, session=session)
        first, rest = events[:20], events[20:]
        await asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in first))
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            sending = asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in rest))
            await asyncio.sleep(2.0)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        await sending
    assert statuses[503] > 0, statuses
    counts = await settled(runtime, timeout=90)
    assert counts == {ACCOUNT: {"synced": len(events)}}
    assert_once(stackone, len(events))


async def test_two_receivers_with_reuse_port_share_one_port_and_every_event_they_accept_is_written(
    make_settings: SettingsFactory, start_runtime: Start, stackone: StackOneStandIn
) -> None:
    """``receiver.reuse_port``: a second receiver binds the port the first holds (no "address in
    use"), the kernel hands connections to both, and each of 24 events either one accepted reaches
    the LMS once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = make_settings(receiver={"port": port, "reuse_port": True})
    people = [f"rp{i:02d}@acme.example" for i in range(24)]
    ids = {stackone.add_user(ACCOUNT, email) for email in people}
    first = await start_runtime(settings, worker=False)
    second = await start_runtime(settings)
    assert first.port == second.port == port

    sender = WebhookSender(f"http://127.0.0.1:{port}", SECRET)  # no shared session: a connection per post
    for i, email in enumerate(people):
        assignment = exec_assignment(f"as-rp-{i}", email, scenario="discovery-call")
        status, body = await sender.post("acme-sales", exec_event("assignment.created", assignment))
        assert status == 202, body

    def accepted(runtime: Runtime) -> float:
        sample = runtime.metrics.registry.get_sample_value("lmsbridge_events_total", {"stage": "accepted"})
        return float(sample or 0.0)

    assert accepted(first) > 0
    assert accepted(second) > 0
    assert accepted(first) + accepted(second) == len(people)
    assert await settled(second) == {ACCOUNT: {"synced": len(people)}}
    written = [a["user_id"] for a in stackone.assignments(ACCOUNT)]
    assert sorted(written) == sorted(ids)


class AmqpProxy:
    """A TCP proxy to RabbitMQ; closing it is RabbitMQ going away for whoever connected through it.

    With ``cut_at_consume`` it reads the client's AMQP frames and, at the first ``basic.consume``,
    closes both sides without passing it on, once: RabbitMQ going away after the worker connected
    and declared its topology but before it consumed. Every later connection passes untouched.
    """

    def __init__(self, amqp_url: str, *, cut_at_consume: bool) -> None:
        parts = urlsplit(amqp_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.cut = not cut_at_consume

    async def start(self) -> str:
        """Listen; the AMQP URL that goes through this proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        netloc = f"{self._parts.username}:{self._parts.password}@127.0.0.1:{port}"
        return urlunsplit(self._parts._replace(netloc=netloc))

    async def close(self) -> None:
        """Stop listening and drop every connection through the proxy."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        pumps = [self._pump(up_reader, writer), self._client_frames(reader, up_writer, writer)]
        tasks = [asyncio.create_task(pump) for pump in pumps]
        self._tasks.update(tasks)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _client_frames(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        upstream.write(await reader.readexactly(8))  # the protocol header
        while True:
            head = await reader.readexactly(7)  # frame type, channel, payload size
            kind, _, size = struct.unpack(">BHI", head)
            rest = await reader.readexactly(size + 1)  # payload and frame end
            if not self.cut and kind == 1 and rest[:4] == struct.pack(">HH", 60, 20):  # basic.consume
                self.cut = True
                return
            upstream.write(head + rest)
            await upstream.drain()


async def test_a_worker_whose_connection_drops_as_it_starts_consuming_waits_and_consumes(
    make_settings: SettingsFactory, start_runtime: Start, stackone: StackOneStandIn, amqp_url: str
) -> None:
    """RabbitMQ dropping the worker's connection after it declared its topology and before it
    consumed: the worker's start waits for RabbitMQ and finishes (it does not end with the fault),
    and every event sent afterwards reaches the LMS once."""
    proxy = AmqpProxy(amqp_url, cut_at_consume=True)
    proxied = await proxy.start()
    try:
        worker = await asyncio.wait_for(start_runtime(make_settings(amqp_url=proxied), receiver=False), 60)
        assert proxy.cut
        receiver = await start_runtime(make_settings(), worker=False)
        people = [f"cut{i:02d}@acme.example" for i in range(12)]
        ids = {stackone.add_user(ACCOUNT, email) for email in people}
        sender = WebhookSender(f"http://127.0.0.1:{receiver.port}", SECRET)
        for i, email in enumerate(people):
            assignment = exec_assignment(f"as-cut-{i}", email, scenario="discovery-call")
            status, body = await sender.post("acme-sales", exec_event("assignment.created", assignment))
            assert status == 202, body
        assert await settled(worker, timeout=60) == {ACCOUNT: {"synced": len(people)}}
        assert sorted(a["user_id"] for a in stackone.assignments(ACCOUNT)) == sorted(ids)
    finally:
        await proxy.close()


async def test_a_worker_stops_promptly_while_rabbitmq_is_unreachable(
    make_settings: SettingsFactory, amqp_url: str
) -> None:
    """RabbitMQ gone (its connections dropped, nothing listening) when the worker is told to stop:
    the stop ends within seconds instead of waiting on channels for a reconnection."""
    proxy = AmqpProxy(amqp_url, cut_at_consume=False)
    worker = Runtime(make_settings(amqp_url=await proxy.start()), receiver=False, worker=True)
    try:
        await worker.start(wait=10)
    finally:
        await proxy.close()
    await asyncio.sleep(0.5)  # the worker has seen its connection go
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(worker.stop(), 30)
    assert asyncio.get_running_loop().time() - started < 15


async def test_a_worker_started_before_its_database_waits_for_it(
    make_settings: SettingsFactory, tmp_path: Path, start_runtime: Callable[..., Awaitable[Runtime]]
) -> None:
    """A worker whose database cannot be opened yet (its directory not there) retries, logging
    `database.unreachable`, and starts once the database can be opened: no traceback, no restart."""
    folder = tmp_path / "later"
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{folder / 'lmsbridge.db'}")

    async def make_folder_later() -> None:
        await asyncio.sleep(1.5)
        folder.mkdir()

    with capture_logs() as logs:
        later = asyncio.create_task(make_folder_later())
        worker = await start_runtime(settings, receiver=False)
        await later
    assert worker.repo is not None
    assert await worker.repo.ping()
    waits = [entry for entry in logs if entry["event"] == "database.unreachable"]
    assert waits
    assert all(entry["error"].startswith("OperationalError") for entry in waits)


async def test_a_worker_whose_database_stays_unreachable_stops_with_one_line_and_no_password(
    make_settings: SettingsFactory,
) -> None:
    """Nothing listening at the database's address for the whole wait: the start fails with an
    InfrastructureFault naming the fault's kind (what `lmsbridge worker` prints before exiting 1),
    and neither it nor the logs carry the URL's password."""
    url = "postgresql+asyncpg://lmsbridge:pg-secret-hunter2@127.0.0.1:1/lmsbridge"
    worker = Runtime(make_settings(database_url=url), receiver=False, worker=True)
    with capture_logs() as logs, pytest.raises(InfrastructureFault) as failed:
        await worker.start(wait=2)
    await worker.stop()
    assert str(failed.value) == "database: unreachable (ConnectionRefusedError)"
    assert [entry["event"] for entry in logs].count("database.unreachable") >= 2
    assert "hunter2" not in repr(logs)


class StartingPostgres:
    """A TCP stand-in in front of the real PostgreSQL: while ``starting``, it answers every
    connection as a PostgreSQL that is starting up does (SQLSTATE 57P03, "the database system is
    starting up"); then it forwards each connection to the real server."""

    def __init__(self, target_port: int = 5432) -> None:
        self.starting = True
        self._target_port = target_port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.starting:
                await self._refuse(reader, writer)
            else:
                await self._forward(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, code = struct.unpack("!II", await reader.readexactly(8))
        if code == 80877103:  # SSLRequest: no SSL here; the startup message follows
            writer.write(b"N")
            length, code = struct.unpack("!II", await reader.readexactly(8))
        await reader.readexactly(length - 8)
        fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
        writer.write(b"E" + struct.pack("!I", len(fields) + 4) + fields)
        await writer.drain()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()


async def test_a_worker_waits_for_a_postgresql_still_starting_up(
    make_settings: SettingsFactory, pg_url: str, start_runtime: Callable[..., Awaitable[Runtime]]
) -> None:
    """PostgreSQL answering "the database system is starting up" (57P03) when the worker starts:
    the worker waits (`database.unreachable` naming the SQLSTATE), then migrates and starts once
    the server takes connections, instead of exiting on a fault that mends itself."""
    postgres = StartingPostgres()
    port = await postgres.start()
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))

    async def started_later() -> None:
        await asyncio.sleep(1.5)
        postgres.starting = False

    try:
        with capture_logs() as logs:
            later = asyncio.create_task(started_later())
            worker = await start_runtime(make_settings(database_url=url), receiver=False)
            await later
        assert worker.repo is not None
        assert await worker.repo.ping()
        waits = [entry["error"] for entry in logs if entry["event"] == "database.unreachable"]
        assert waits
        assert all("SQLSTATE 57P03" in error for error in waits)
    finally:
        await postgres.close()


def postgresql(action: str) -> None:
    """``restart``, ``stop`` or ``start`` the local PostgreSQL cluster (a stop cuts every connection to
    it); after a restart or a start, wait until it answers."""
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if action != "stop":
        subprocess.run(["pg_isready", "-h", "127.0.0.1", "-t", "60"], check=True, capture_output=True, timeout=90)


def restart_postgresql() -> None:
    """Restart the local PostgreSQL cluster and wait until it answers."""
    postgresql("restart")


@pytest.mark.serial  # restarts PostgreSQL under every test running beside it
async def test_a_postgresql_restart_under_a_running_pipeline_loses_nothing(
    make_settings: SettingsFactory, stackone: StackOneStandIn, start_runtime: Start, pg_url: str, amqp_url: str
) -> None:
    """PostgreSQL restarted (a failover, a minor upgrade) while `lmsbridge run` stores and writes a
    batch on it: lmsbridge needs no restart, every event it accepted reaches the LMS once, and
    nothing is dead-lettered. With the default 120 s sync lease, all within a minute: a sync the
    restart cut takes its own lease again (before: 118.5-118.7 s in three runs, each waiting out a
    lease it could not give back)."""
    people = [f"pg{i}@acme.example" for i in range(10)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings(database_url=pg_url, worker={"sync_lease_seconds": 120.0})
    runtime = await start_runtime(settings)
    events = batch(60, people)
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)
        await asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events[:20]))
        sending = asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events[20:]))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(restart_postgresql)
        await sending
    assert await settled(runtime, timeout=60) == {ACCOUNT: {"synced": len(events)}}
    assert_once(stackone, len(events))
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(f"{settings.broker.prefix}.dead", passive=True)
        assert dead.declaration_result.message_count == 0


@pytest.mark.serial  # stops PostgreSQL under every test running beside it
async def test_a_worker_whose_postgresql_is_down_consumes_nothing_until_it_is_back(
    make_settings: SettingsFactory, stackone: StackOneStandIn, start_runtime: Start, pg_url: str, amqp_url: str
) -> None:
    """PostgreSQL down for longer than a restart (a failover, an outage) while webhooks keep coming:
    the receiver still accepts them, and the worker stops consuming (``database.paused``, the gauge
    ``lmsbridge_database_paused`` at 1) instead of sending every event round its retry queue twice a
    second. The events wait in RabbitMQ; once PostgreSQL is back each reaches the LMS once, and
    nothing is dead-lettered."""
    people = [f"down{i}@acme.example" for i in range(10)]
    for email in people:
        stackone.add_user(ACCOUNT, email)
    settings = make_settings(database_url=pg_url, worker={"pause_probe_seconds": 0.5})
    runtime = await start_runtime(settings)
    events = batch(80, people)
    statuses: Counter[int] = Counter()

    def paused() -> float:
        return runtime.metrics.registry.get_sample_value("lmsbridge_database_paused") or 0.0

    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(f"http://127.0.0.1:{runtime.port}", SECRET, session=session)
        await asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events[:20]))
        assert await settled(runtime, timeout=30) == {ACCOUNT: {"synced": 20}}
        with capture_logs() as logs:
            await asyncio.to_thread(postgresql, "stop")
            try:
                await asyncio.gather(*(deliver(sender, "acme-sales", m, e, statuses) for m, e in events[20:]))
                async with asyncio.timeout(30):
                    while paused() != 1.0:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # the messages in hand when it paused are settled (retried)
                retried = runtime.metrics.count("retried")
                await asyncio.sleep(3)
                assert runtime.metrics.count("retried") == retried  # nothing consumed while paused
            finally:
                await asyncio.to_thread(postgresql, "start")
            assert await settled(runtime, timeout=90) == {ACCOUNT: {"synced": len(events)}}
    assert statuses[202] == len(events)
    assert paused() == 0.0
    assert_once(stackone, len(events))
    events_logged = [e["event"] for e in logs]
    assert "database.paused" in events_logged
    assert "database.resumed" in events_logged
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(f"{settings.broker.prefix}.dead", passive=True)
        assert dead.declaration_result.message_count == 0
