"""``lmsbridge dlq``: what the dead-letter queue holds, and putting it back.

A dead-letter queue that does not exist yet (nothing has run with this prefix) is empty, not an
error; an unreachable broker is one line and exit code 1, never a traceback. The events a replay
sends back are added to the delivery ledger (``requeued``: they were counted dead-lettered once and
a worker settles them again); a database that refuses that write is one line, never a failed replay.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from aio_pika.exceptions import AMQPConnectionError, ChannelNotFoundEntity
from rich.console import Console
from rich.table import Table

from lmsbridge.broker.dead import DeadLetters, Replayed
from lmsbridge.broker.topology import EVENTS_KEY, Names, events_key, sync_key
from lmsbridge.errors import BrokerUnavailable
from lmsbridge.ops import count_requeued
from lmsbridge.settings import Settings

T = TypeVar("T")


def _dlq(settings: Settings) -> DeadLetters:
    """The dead-letter queue; a replay sends back only what a worker of these settings consumes."""
    routes = {EVENTS_KEY, *(events_key(s) for s in settings.sources), *(sync_key(a) for a in settings.accounts())}
    return DeadLetters(settings.amqp_url.get_secret_value(), settings.broker.prefix, routes=routes)


async def _ask(settings: Settings, call: Awaitable[T], empty: T) -> T:
    """Run one call on the dead-letter queue; ``empty`` when the queue was never declared."""
    try:
        return await call
    except ChannelNotFoundEntity:
        print(f"lmsbridge: no dead-letter queue {Names(settings.broker.prefix).dead} yet", file=sys.stderr)
        return empty
    except TimeoutError:  # connected, but no answer: a replay's confirm, say, under an alarm
        raise BrokerUnavailable(
            "RabbitMQ did not answer in time (a memory or disk alarm blocking publishers? "
            "`rabbitmq-diagnostics alarms`); what was not confirmed stays in the dead-letter queue"
        ) from None
    except (AMQPConnectionError, ConnectionError, OSError) as exc:
        raise BrokerUnavailable(f"RabbitMQ unreachable: {type(exc).__name__}") from None


def _held_elsewhere(settings: Settings, dlq: DeadLetters, what: str) -> bool:
    """Say so (stderr) when another client consumes the dead-letter queue; True if one does."""
    if not dlq.held_elsewhere:
        return False
    print(
        f"lmsbridge: {dlq.held_elsewhere} other consumer(s) of {Names(settings.broker.prefix).dead} (another"
        f" `lmsbridge dlq` still running?): the dead letters they hold are not {what} until they let them go",
        file=sys.stderr,
    )
    return True


async def list_dead(settings: Settings, *, limit: int, as_json: bool, reason: str | None = None) -> int:
    """Print the dead-lettered messages (of ``reason`` only, when given)."""
    dlq = _dlq(settings)
    items = await _ask(settings, dlq.list(limit, reason=reason), [])
    _held_elsewhere(settings, dlq, "listed")
    if as_json:
        sys.stdout.write(orjson.dumps([m.summary() for m in items]).decode() + "\n")
        return 0
    what = "Dead letters" if reason is None else f"Dead letters of reason {reason}"
    table = Table(title=f"{what} ({len(items)})")
    for column in ("message id", "kind", "reason", "tries", "error"):
        table.add_column(column)
    for m in items:
        table.add_row(m.message_id, m.kind, m.reason, str(m.tries), m.error[:80])
    Console(markup=False).print(table)  # ids and errors are printed as they are, never as markup
    return 0


async def show(settings: Settings, message_id: str) -> int:
    """Print one dead-lettered message with its body."""
    dlq = _dlq(settings)
    found = await _ask(settings, dlq.show(message_id), None)
    _held_elsewhere(settings, dlq, "searched")
    if found is None:
        print(f"lmsbridge: no dead letter with id {message_id}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps({**found.summary(), "body": found.body}, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def replay(settings: Settings, message_id: str | None, *, reason: str | None = None) -> int:
    """Send dead letters back to their queues (with all, of ``reason`` only when given); 1 when one
    was asked for and not sent, or some stayed dead because no queue takes them, or another client
    held some out of reach."""
    dlq = _dlq(settings)
    done = Replayed()
    try:
        await _ask(settings, dlq.replay(message_id, into=done, reason=reason), done)
    except BaseException:  # stopped (Ctrl-C, SIGTERM) or RabbitMQ gone: what went back is still said
        print(
            f"lmsbridge: replayed {done.sent} message(s) before it stopped; the rest stay in the dead-letter queue",
            file=sys.stderr,
        )
        raise
    finally:  # the events that went back are the ledger's inputs again, however the replay ended
        await count_requeued(settings, "dlq replay", done.events)
    print(f"lmsbridge: replayed {done.sent} message(s)")
    if done.passed_over:
        print(f"lmsbridge: left {done.passed_over} message(s) of other reasons than {reason} in the dead-letter queue")
    held = _held_elsewhere(settings, dlq, "replayed")
    for key, n in sorted(done.unroutable.items()):
        print(
            f"lmsbridge: {n} message(s) for {key} left in the dead-letter queue: no queue takes them"
            " (an account or source no longer in the settings, which no worker consumes, or its queue"
            " deleted: a worker declares it)",
            file=sys.stderr,
        )
    return 0 if (done.sent or message_id is None) and not done.unroutable and not held else 1


async def purge(settings: Settings) -> int:
    """Drop every dead letter (1 when another client held some out of reach)."""
    dlq = _dlq(settings)
    n = await _ask(settings, dlq.purge(), 0)
    print(f"lmsbridge: purged {n} message(s)")
    return 1 if _held_elsewhere(settings, dlq, "purged") else 0
