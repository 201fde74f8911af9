"""Operator commands: ``migrate``, ``check`` (a probe's exit code) and ``status``; and the delivery
ledger's counts of the one-shot commands that requeue events (``reconcile``, ``dlq replay``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.broker.connection import connect_once
from lmsbridge.broker.topology import Names
from lmsbridge.budget import holder_name
from lmsbridge.errors import BrokerUnavailable
from lmsbridge.settings import Settings
from lmsbridge.storage import DEAD, PARKED, Repository, create_engine
from lmsbridge.storage.budget import BudgetStore, key_id
from lmsbridge.storage.engine import missing_sqlite_file
from lmsbridge.storage.ledger import LedgerStore, record_once
from lmsbridge.storage.migrate import require_current_schema, schema_report, upgrade_when_reachable


async def migrate(settings: Settings, *, wait: float = 0.0) -> int:
    """Bring the database schema to the newest revision, waiting up to ``wait`` seconds for the
    database to be reachable (a migration job started beside its database)."""
    repo = Repository(create_engine(settings.database_url.get_secret_value(), bounded=False))
    try:
        await upgrade_when_reachable(repo.engine, wait=wait)
    finally:
        await repo.close()
    print("lmsbridge: database schema is up to date")
    return 0


async def _broker_ok(settings: Settings, timeout: float) -> bool:
    try:
        connection = await asyncio.wait_for(
            connect_once(settings.amqp_url.get_secret_value(), "lmsbridge-check"), timeout
        )
    except Exception:
        return False
    await connection.close()
    return True


async def check(settings: Settings, *, timeout: float = 5.0) -> int:
    """0 when RabbitMQ and the database both answer within ``timeout``, else 1.

    It also says where the schema is (``"schema"``: ``"current"``, or the revision it holds and
    what to run), without failing for it: a worker migrates when it starts, and a receiver alone
    needs no table to accept webhooks (``check`` is its container's health check). A SQLite file
    that does not exist fails it, and is not created.
    """
    missing = missing_sqlite_file(settings.database_url.get_secret_value())
    if missing is not None:  # connecting would create it, empty, and call that a database that answers
        print(f"lmsbridge: database: the SQLite file {missing} does not exist", file=sys.stderr)
        db_ok, schema = False, None
    else:
        repo = Repository(create_engine(settings.database_url.get_secret_value()))
        try:
            db_ok, schema = await _database_check(repo, timeout)
        finally:
            await repo.close()
    broker_ok = await _broker_ok(settings, timeout)
    print(orjson.dumps({"broker": broker_ok, "database": db_ok, "schema": schema}).decode())
    return 0 if broker_ok and db_ok else 1


async def _database_check(repo: Repository, timeout: float) -> tuple[bool, str | None]:
    """Whether the database answers, and where its schema is (None when that could not be read)."""
    try:
        if not await asyncio.wait_for(repo.ping(), timeout):
            return False, None
    except TimeoutError:
        return False, None
    try:
        return True, await asyncio.wait_for(schema_report(repo.engine), timeout)
    except (SQLAlchemyError, OSError):  # it answered, then failed reading the revision (or timed out)
        return True, None


async def queue_depths(settings: Settings, *, also: list[str] | None = None) -> dict[str, int | None]:
    """Messages ready in each of lmsbridge's queues, and in ``also`` (None when a queue does not exist)."""
    names = Names(settings.broker.prefix)
    queues = names.queues(list(settings.sources), settings.accounts(), len(settings.broker.retry_delays))
    queues += also or []
    depths: dict[str, int | None] = {}
    connection = await connect_once(settings.amqp_url.get_secret_value(), "lmsbridge-status")
    async with connection:
        for name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = queue.declaration_result.message_count
            except Exception:
                depths[name] = None
            finally:
                if not channel.is_closed:
                    await channel.close()
    return depths


async def gather_status(settings: Settings) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data."""
    depths: dict[str, int | None] | None
    stranded: dict[str, int] = {}
    repo = Repository(create_engine(settings.database_url.get_secret_value()))
    try:
        await require_current_schema(repo.engine)
        counts = await repo.stats.status_counts()
        sources = await repo.stats.known_sources()
        gone = _unconfigured_queues(settings, accounts=list(counts), sources=sources)
        try:
            depths = await queue_depths(settings, also=gone)
            stranded = {name: depth for name in gone if (depth := depths.pop(name))}
            broker = "reachable"
        except Exception as exc:  # the database's half of the report is still worth showing
            why = str(exc) if isinstance(exc, BrokerUnavailable) else type(exc).__name__
            depths, broker = None, f"unreachable ({why})"
        parked = await repo.stats.top_reasons(PARKED)
        dead = await repo.stats.top_reasons(DEAD)
        inbox = await repo.stats.inbox_count()
        accounts = {a: await repo.accounts.account(a) for a in settings.accounts()}
        system_ledger = await _system_ledger(settings, repo.engine, depths)
        rate_budget = await _budget_status(settings, repo.engine)
    finally:
        await repo.close()
    from lmsbridge.reconcile.status import last_passes

    reconcile = await last_passes(settings)
    return {
        "system_ledger": system_ledger,
        "ledger": {"events_remembered": inbox, **_totals(counts)},
        "accounts": {
            a: {
                "records": counts.get(a, {}),
                "paused": accounts[a].paused,
                "pause_reason": accounts[a].reason,
                "email_filter": accounts[a].email_filter,
            }
            for a in settings.accounts()
        },
        "broker": broker,
        "queues": depths if depths is not None else {},
        "stranded_queues": stranded,
        "parked_reasons": dict(parked),
        "dead_reasons": dict(dead),
        "rate_budget": rate_budget,
        "reconcile": reconcile,
    }


def _unconfigured_queues(settings: Settings, *, accounts: list[str], sources: list[str]) -> list[str]:
    """The queues of accounts and sources the database has records for and the settings no longer
    name. No worker consumes them (a worker consumes the queues of what it is configured with):
    what they hold waits there for good, and ``status`` names those that hold anything."""
    names = Names(settings.broker.prefix)
    gone = [names.sync(a) for a in accounts if a not in settings.accounts()]
    return gone + [names.intake(s) for s in sources if s not in settings.sources]


async def _system_ledger(
    settings: Settings, engine: AsyncEngine, depths: dict[str, int | None] | None
) -> dict[str, Any]:
    """Every process's event counters added up (from the database) against what the broker holds.

    ``accepted + requeued = upserted + duplicate + dead_lettered + in_flight``: the intake queues'
    inputs are the webhooks receivers accepted and the events reconcile passes and dead-letter replays
    put back (``requeued``); ``in_flight`` is what came in and is not yet settled; the broker holds
    ``broker_ready`` of it in the intake and delay queues, the rest is in workers' hands. The identity
    holds when ``in_flight`` is at least ``broker_ready`` (and 0 once the queues are empty and the
    workers idle); it cannot be checked exactly while a process's counts are not current
    (``processes_lost``: not heard from for ``processes_silent_seconds``, killed without a clean stop or
    running while the database refuses its writes, which its rows cannot tell apart), nor while RabbitMQ
    cannot be asked (``depths`` None: ``broker_ready`` is None too).
    """
    store = LedgerStore(engine)
    try:
        system = await store.system()
    finally:
        await store.close()
    t = system.totals
    settled = t.get("upserted", 0) + t.get("duplicate", 0) + t.get("dead_lettered", 0)
    in_flight = t.get("accepted", 0) + t.get("requeued", 0) - settled
    names = Names(settings.broker.prefix)
    event_queues = [names.events, *(names.intake(s) for s in settings.sources)]
    event_queues += [names.delay(level) for level in range(len(settings.broker.retry_delays))]
    ready = None if depths is None else sum(depths.get(q) or 0 for q in event_queues)
    if ready is None:
        verdict = "unchecked: RabbitMQ did not answer, so what it holds is unknown"
    elif system.lost:
        verdict = (
            "unchecked: a process's counts are not current (it stopped without a clean stop, or it runs"
            " and cannot write them)"
        )
    elif in_flight >= max(0, ready):
        verdict = "holds"
    elif system.killed:
        verdict = f"approximate: {system.killed} killed process(es) took their last counts with them"
    elif in_flight < 0:
        verdict = "broken: more settled than accepted and requeued"
    else:
        verdict = "broken: the broker holds more than in flight"
    return {
        "accepted": t.get("accepted", 0),
        "deduplicated_at_receiver": t.get("deduplicated", 0),
        "requeued": t.get("requeued", 0),
        "upserted": t.get("upserted", 0),
        "duplicate": t.get("duplicate", 0),
        "dead_lettered": t.get("dead_lettered", 0),
        "in_flight": in_flight,
        "broker_ready": ready,
        "identity": verdict,
        "processes": system.processes,
        "processes_running": system.running,
        "processes_lost": system.lost,
        "processes_silent_seconds": {p: round(age, 1) for p, age in system.silent.items()},
        "processes_killed": system.killed,
    }


async def count_requeued(settings: Settings, command: str, events: int) -> None:
    """Add the ``events`` a one-shot ``command`` put in intake queues to the delivery ledger (a final
    row of its own); a database that refuses says so in one line and fails nothing."""
    why = await record_once(
        settings.database_url.get_secret_value(), holder_name(command.replace(" ", "-")), {"requeued": events}
    )
    if why is not None:
        print(
            f"lmsbridge: {command}: the delivery ledger was not updated ({why}): the {events} event(s) it"
            " queued are missing from status's ledger",
            file=sys.stderr,
        )


async def _budget_status(settings: Settings, engine: AsyncEngine) -> dict[str, Any]:
    """The key's shared budget: its limit, slots given out ahead, a pause, and who drew on it in the last minute."""
    s = settings.stackone
    store = BudgetStore(engine)
    try:
        state = await store.state(key_id(s.base_url, s.api_key.get_secret_value()))
    finally:
        await store.close()
    return {
        "per_minute": s.rate_limit_per_minute,
        "reserved_ahead_seconds": round(state.reserved_ahead, 3),
        "paused_for_seconds": round(state.paused_for, 3),
        "holders": [
            {"holder": h.holder, "claimed_total": h.claimed_total, "last_claim_age": round(h.age, 1)}
            for h in state.holders
        ],
    }


def _totals(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for per in counts.values():
        for status, n in per.items():
            totals[status] = totals.get(status, 0) + n
    return totals


async def status(settings: Settings, *, as_json: bool) -> int:
    """Print the status table (or JSON)."""
    data = await gather_status(settings)
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    console = Console(markup=False)  # reasons, errors and names are printed as they are, never as markup
    sl = data["system_ledger"]
    system = Table(
        title=f"Delivery ledger, every process ({sl['processes_running']} running, {sl['processes']} seen): "
        f"identity {sl['identity']}"
    )
    keys = ("accepted", "requeued", "upserted", "duplicate", "dead_lettered", "in_flight", "broker_ready")
    for column in keys:
        system.add_column(column.replace("_", " "), justify="right")
    system.add_row(*("?" if sl[k] is None else str(sl[k]) for k in keys))
    console.print(system)
    for process, age in sl["processes_silent_seconds"].items():
        console.print(
            f"{process}: not heard from for {age:.0f} s (stopped without a clean stop, or running and unable"
            " to write its counts: its log says ledger.write_failed)"
        )
    ledger = Table(title="Records per sync state")
    for column in ("events remembered", "pending", "synced", "parked", "dead"):
        ledger.add_column(column, justify="right")
    lg = data["ledger"]
    ledger.add_row(*(str(lg.get(k, 0)) for k in ("events_remembered", "pending", "synced", "parked", "dead")))
    console.print(ledger)
    accounts = Table(title="Accounts")
    for column in ("account", "pending", "synced", "parked", "dead", "paused", "e-mail filter"):
        accounts.add_column(column)
    for name, info in data["accounts"].items():
        rec = info["records"]
        paused = f"yes: {info['pause_reason']}" if info["paused"] else "no"
        accounts.add_row(
            name,
            *(str(rec.get(k, 0)) for k in ("pending", "synced", "parked", "dead")),
            paused,
            info["email_filter"],
        )
    console.print(accounts)
    queues = Table(title="Queues" if data["broker"] == "reachable" else f"Queues: RabbitMQ {data['broker']}")
    queues.add_column("queue")
    queues.add_column("ready", justify="right")
    for name, depth in data["queues"].items():
        queues.add_row(name, "missing" if depth is None else str(depth))
    console.print(queues)
    for name, depth in data["stranded_queues"].items():
        console.print(
            f"[bold]{escape(name)}[/bold] holds {depth} message(s) for an account or source no longer in the "
            "settings: no worker consumes it. Put it back in the settings until the queue is empty, or delete "
            "the queue if those writes should not happen.",
            markup=True,
        )
    for title, key in (("Parked, by reason", "parked_reasons"), ("Dead, by reason", "dead_reasons")):
        table = Table(title=title)
        table.add_column("reason")
        table.add_column("records", justify="right")
        for reason, n in data[key].items():
            table.add_row(reason, str(n))
        console.print(table)
    if data["reconcile"]:
        from lmsbridge.reconcile.status import print_passes

        print_passes(console, data["reconcile"])
    rb = data["rate_budget"]
    budget = Table(
        title=f"StackOne rate budget: {rb['per_minute']}/min for the key, shared by every process "
        f"(paused for {rb['paused_for_seconds']} s)"
    )
    for column in ("process drawing on it (last minute)", "slots taken since start", "last claim, s ago"):
        budget.add_column(column)
    for h in rb["holders"]:
        budget.add_row(h["holder"], str(h["claimed_total"]), str(h["last_claim_age"]))
    console.print(budget)
    return 0
