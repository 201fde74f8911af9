"""``lmsbridge demo``: the whole pipeline, for real, against stand-ins built into the package.

It starts a StackOne stand-in (a real HTTP server that keeps what it receives, and that
ignores ``filter[email]`` as most LMSs do) and a stand-in for the security-training
platform's API, runs lmsbridge (receiver + worker) on a local RabbitMQ and a temporary
SQLite file, sends a realistic batch of signed webhooks from both platforms (duplicates
and out-of-order deliveries included), and shows what the LMS received.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lmsbridge.runtime import Runtime
from lmsbridge.settings import Settings, load_settings
from lmsbridge.storage import PENDING, SYNCED
from lmsbridge.testing.limeplate import LimeplateStandIn
from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import (
    T0,
    WebhookSender,
    exec_assignment,
    exec_event,
    limeplate_assignment,
    limeplate_completed,
    limeplate_created,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - the public test vector; demo only
ACCOUNT = "acme-workday"
STACKONE_KEY = "demo-stackone-key"
PLATFORM_KEY = "scs_live_demo"
TEAM = [f"{first}.{last}@acme.example" for first, last in [
    ("jane", "smith"), ("omar", "haddad"), ("li", "wei"), ("ana", "souza"), ("tom", "berg"), ("eva", "novak"),
    ("raj", "patel"), ("mia", "rossi"), ("ken", "sato"), ("zoe", "martin"), ("ivan", "petrov"), ("ada", "okafor"),
]]  # fmt: skip
REFUSED_FOR = 30.0
"""Seconds the demo posts a webhook again while the receiver answers 429 or 503, before giving up."""
SCENARIOS = [("discovery-call", "Discovery Call"), ("pricing-objection", "Pricing Objection"), ("renewal", "Renewal")]


def demo_settings(
    base: Settings | None, *, amqp_url: str | None, db: Path, stackone_url: str, platform_url: str
) -> Settings:
    """Settings for the demo: the user's broker, everything else local and throwaway."""
    amqp = amqp_url or (base.amqp_url.get_secret_value() if base else "amqp://guest:guest@127.0.0.1:5672/")
    return load_settings(
        amqp_url=amqp,
        database_url=f"sqlite+aiosqlite:///{db}",
        receiver={"host": "127.0.0.1", "port": 0},
        stackone={"base_url": stackone_url, "api_key": STACKONE_KEY, "directory_refresh_seconds": 60},
        broker={"prefix": f"lmsbridge-demo-{uuid.uuid4().hex[:6]}", "retry_delays": (0.5, 1.0, 2.0, 5.0)},
        worker={"metrics_port": 0},
        sources={
            "acme-security": {
                "platform": "limeplate",
                "secrets": [SECRET],
                "accounts": [ACCOUNT],
                "api_base_url": platform_url,
                "api_key": PLATFORM_KEY,
            },
            "acme-sales": {"platform": "exec", "secrets": [SECRET], "accounts": [ACCOUNT]},
        },
    )


def build_batch(events: int, rng: random.Random) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """(source, envelope) pairs: a team assignment, completions, Exec assignments; with duplicates."""
    team = limeplate_assignment("d7c8a1b2-3e45-4f67-89ab-cd0123456789")
    detail = {
        **team,
        "note": "Follow-up to the May audit finding.",
        "assignedByName": "API Key: CI Ingestion",
        "userProgress": [
            {
                "userId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"user:{email}")),
                "name": email.split("@")[0].replace(".", " ").title(),
                "email": email,
                "totalChallenges": 8,
                "completedChallenges": 0,
                "progressPercent": 0,
                "completedAt": None,
                "isOverdue": False,
            }
            for email in TEAM
        ],
    }
    batch: list[tuple[str, dict[str, Any]]] = [("acme-security", limeplate_created(team))]
    for i, email in enumerate(TEAM[: len(TEAM) // 2]):
        batch.append(("acme-security", limeplate_completed(team, email, completed_at=T0 + timedelta(days=2, hours=i))))
    n = 0
    while len(batch) < events:
        email = TEAM[n % len(TEAM)]
        slug, title = SCENARIOS[n % len(SCENARIOS)]
        asg = f"a{n:05d}"
        batch.append(
            ("acme-sales", exec_event("assignment.created", exec_assignment(asg, email, scenario=slug, name=title)))
        )
        if rng.random() < 0.6:
            passed = rng.random() < 0.75
            score = round(rng.uniform(55, 99) if passed else rng.uniform(20, 59), 1)
            status = "completed" if passed else "did_not_pass"
            done = exec_assignment(asg, email, scenario=slug, name=title, status=status, best_score=score)
            batch.append(("acme-sales", exec_event("assignment.completed", done, at=T0 + timedelta(days=3))))
        n += 1
    batch = batch[:events]
    # Out of order: swap a few neighbours; duplicates: resend a few (same message id).
    for _ in range(max(1, events // 10)):
        i = rng.randrange(1, len(batch) - 1)
        batch[i], batch[i + 1] = batch[i + 1], batch[i]
    batch += [batch[rng.randrange(len(batch))] for _ in range(max(1, events // 20))]
    return batch, detail


async def run_demo(base: Settings | None, *, events: int = 60, amqp_url: str | None = None) -> int:
    """Run the demo; returns the process exit code (0 when every record reached the LMS)."""
    console = Console()
    rng = random.Random(7)
    stackone = StackOneStandIn(api_key=STACKONE_KEY, honour_email_filter=False)
    platform = LimeplateStandIn(api_key=PLATFORM_KEY)
    await stackone.start()
    await platform.start()
    people = {stackone.add_user(ACCOUNT, email, email.split("@")[0].replace(".", " ").title()): email for email in TEAM}
    batch, detail = build_batch(max(events, 8), rng)
    platform.add_assignment(detail)
    with tempfile.TemporaryDirectory(prefix="lmsbridge-demo-") as tmp:
        settings = demo_settings(
            base, amqp_url=amqp_url, db=Path(tmp) / "demo.db", stackone_url=stackone.url, platform_url=platform.url
        )
        runtime = Runtime(settings, receiver=True, worker=True)
        try:
            await runtime.start(wait=15)
        except Exception as exc:
            await runtime.stop()
            where = _broker_address(settings.amqp_url.get_secret_value())
            console.print(
                f"[red]lmsbridge demo: cannot start: {escape(str(exc))}[/red] (is RabbitMQ running on {escape(where)}?)"
            )
            await stackone.close()
            await platform.close()
            return 1
        started = time.perf_counter()
        refused: str | None = None
        try:
            statuses, refused = await _send(console, runtime, batch)
            if refused is None:
                settled = await _wait_for_sync(console, runtime)
                assert runtime.repo is not None
                counts = await runtime.repo.stats.status_counts()
        finally:
            await runtime.stop()
            await _delete_topology(settings)
        elapsed = time.perf_counter() - started
    _report(console, stackone, people, statuses, elapsed)
    await stackone.close()
    await platform.close()
    if refused is not None:
        console.print(
            f"[red]lmsbridge demo: the receiver kept refusing webhooks for {REFUSED_FOR:g} s, the last"
            f" answer {refused}[/red]"
        )
        return 1
    records = sum(sum(per.values()) for per in counts.values())
    synced = sum(per.get(SYNCED, 0) for per in counts.values())
    in_lms = len(stackone.assignments())
    if settled and records and synced == records == in_lms and not stackone.violations:
        console.print(f"[green]every record reached the LMS: {synced} of {records} records, once each[/green]")
        return 0
    console.print(
        f"[red]NOT every record reached the LMS: {synced} of {records} records synced, {in_lms} LMS assignments, "
        f"{len(stackone.violations)} requests off the spec[/red]"
    )
    return 1


async def _send(
    console: Console, runtime: Runtime, batch: list[tuple[str, dict[str, Any]]]
) -> tuple[dict[int, int], str | None]:
    """Post the batch, each webhook again while it is answered 429 or 503, as a platform would.

    Returns each final status's count, and what the receiver said when it kept refusing for
    :data:`REFUSED_FOR` seconds (a RabbitMQ alarm), the rest then left unsent; else None.
    """
    statuses: dict[int, int] = {}
    url = f"http://127.0.0.1:{runtime.port}"
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(url, SECRET, session=session)
        with Progress(
            TextColumn("sending webhooks"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("send", total=len(batch))
            for source, envelope in batch:
                status, refused = await _post(sender, source, envelope)
                statuses[status] = statuses.get(status, 0) + 1
                if refused is not None:
                    if runtime.broker.blocked:
                        refused += ": RabbitMQ is blocking publishers (a memory or disk alarm: `rabbitmqctl status`)"
                    return statuses, refused
                progress.advance(task)
    return statuses, None


async def _post(sender: WebhookSender, source: str, envelope: dict[str, Any]) -> tuple[int, str | None]:
    """Post ``envelope``, again each second while it is answered 429 or 503, for up to
    :data:`REFUSED_FOR` seconds; the last status, and the receiver's answer if still refused."""
    status, body = await sender.post(source, envelope)
    refused_since = time.monotonic()
    while status in (429, 503):
        if time.monotonic() - refused_since >= REFUSED_FOR:
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            return status, f"{status} ({message})" if message else str(status)
        await asyncio.sleep(1.0)
        status, body = await sender.post(source, envelope)
    return status, None


async def _wait_for_sync(console: Console, runtime: Runtime, timeout: float = 120.0) -> bool:
    assert runtime.repo is not None
    with Progress(
        TextColumn("syncing to the LMS"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("sync", total=None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = await runtime.repo.stats.status_counts()
            total = sum(sum(per.values()) for per in counts.values())
            pending = sum(per.get(PENDING, 0) for per in counts.values())
            depths = await runtime.update_queue_depths()
            queued = sum(v for k, v in depths.items() if not k.endswith(".dead"))
            progress.update(task, total=total, completed=total - pending)
            if total and not pending and not queued:
                return True
            await asyncio.sleep(0.3)
    return False


def _report(
    console: Console, stackone: StackOneStandIn, users: dict[str, str], statuses: dict[int, int], elapsed: float
) -> None:
    completions = {(c["user_id"], c["body"]["learning_object_external_reference"]): c for c in stackone.completions()}
    table = Table(title=f"What the LMS received (account {ACCOUNT})")
    for column in ("person", "learning object", "assignment", "completion", "score"):
        table.add_column(column)
    for a in sorted(
        stackone.assignments(),
        key=lambda a: (users.get(a["user_id"], ""), a["body"]["learning_object_external_reference"]),
    ):
        ref = a["body"]["learning_object_external_reference"]
        c = completions.get((a["user_id"], ref))
        score = (c["body"].get("score") or {}).get("percentage") if c else None
        table.add_row(
            users.get(a["user_id"], a["user_id"]),
            ref,
            a["body"]["status"]["value"],
            c["body"]["result"]["value"] if c else "-",
            "-" if score is None else f"{score:g}",
        )
    console.print(table)
    summary = Table(title="Summary")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for status, n in sorted(statuses.items()):
        summary.add_row(f"webhooks answered {status}", str(n))
    summary.add_row("learning objects upserted", str(len(stackone.content(ACCOUNT))))
    summary.add_row("LMS assignments", str(len(stackone.assignments())))
    summary.add_row("LMS completions", str(len(stackone.completions())))
    summary.add_row("StackOne requests", str(len(stackone.requests)))
    summary.add_row("requests off the spec", str(len(stackone.violations)))
    summary.add_row("seconds", f"{elapsed:.1f}")
    console.print(summary)


async def _delete_topology(settings: Settings) -> None:
    """The demo's queues are throwaway: remove them so repeated demos leave nothing behind."""
    from lmsbridge.broker import Names
    from lmsbridge.broker.connection import connect_once

    names = Names(settings.broker.prefix)
    connection = await connect_once(settings.amqp_url.get_secret_value(), "lmsbridge-demo")
    async with connection:
        channel = await connection.channel()
        for queue in names.queues(list(settings.sources), settings.accounts(), len(settings.broker.retry_delays)):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.delay_exchange, names.dead_exchange):
            await channel.exchange_delete(exchange)


def _broker_address(url: str) -> str:
    """The broker's host and port as the URL names them: never its user or password."""
    broker = urlsplit(url)
    try:
        port = broker.port or 5672
    except ValueError:
        return f"{broker.hostname} (its port in the URL is not a number)"
    return f"{broker.hostname}:{port}"
