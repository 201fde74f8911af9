"""RabbitMQ topology: names and declarations, in one place.

```
                      +--> {p}.events.<source>   (quorum; DLX {p}.dead), one per webhook source
 {p} (direct) --------+--> {p}.sync.<account>    (quorum; DLX {p}.dead), one per StackOne account
   ^                                   |
   | dead-lettered on expiry           | retry: published to {p}.delay with lmsbridge-delay=i
 {p}.delay.<i> (quorum, TTL) <-- {p}.delay (headers)
 {p}.dead (fanout) --> {p}.dead           operator's dead-letter queue: list, show, replay, purge
```
A retried message keeps its routing key, so when its delay queue dead-letters it back into
``{p}`` it lands in the queue it came from. A queue per source at intake, like a queue per
account at delivery, keeps one platform's backlog from delaying another's events: consumers
take from every queue side by side. ``{p}.events`` (routing key ``event``) takes events of
sources the broker was not told about, and whatever an older version left there. Quorum queues dead-letter at-least-once
(RabbitMQ 3.10+); ``queue_type = "classic"`` exists for brokers without quorum support.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from lmsbridge.settings import BrokerSettings

EVENTS_KEY = "event"
# Not "x-" prefixed: a headers exchange with x-match=all ignores x- arguments when matching,
# which would route every retry to every delay queue.
DELAY_HEADER = "lmsbridge-delay"
# A message the consumers returned this often is dead-lettered by the broker. The consumer
# never returns a message on purpose (a paused account's messages are published again), and
# dead-letters one delivered DELIVERY_LIMIT - 1 times itself, recording why on the record.
DELIVERY_LIMIT = 50


def events_key(source: str) -> str:
    """Routing key of a source's intake queue."""
    return f"{EVENTS_KEY}.{source}"


def sync_key(account: str) -> str:
    """Routing key of an account's sync queue."""
    return f"sync.{account}"


@dataclass(frozen=True, slots=True)
class Names:
    """Every exchange and queue name, derived from the configured prefix."""

    prefix: str

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def delay_exchange(self) -> str:
        return f"{self.prefix}.delay"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    def intake(self, source: str) -> str:
        return f"{self.prefix}.events.{source}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def sync(self, account: str) -> str:
        return f"{self.prefix}.sync.{account}"

    def delay(self, level: int) -> str:
        return f"{self.prefix}.delay.{level}"

    def queues(self, sources: Sequence[str], accounts: Sequence[str], delay_levels: int) -> list[str]:
        """Every queue: intake (shared, then per source), dead letters, sync per account, delays."""
        return [
            self.events,
            *(self.intake(s) for s in sources),
            self.dead,
            *(self.sync(a) for a in accounts),
            *(self.delay(i) for i in range(delay_levels)),
        ]


@dataclass(slots=True)
class Topology:
    """Declared exchanges, ready to publish to."""

    names: Names
    exchange: AbstractExchange
    delay_exchange: AbstractExchange
    dead_exchange: AbstractExchange


def _work_queue_args(settings: BrokerSettings, dlx: str) -> dict[str, Any]:
    args: dict[str, Any] = {"x-dead-letter-exchange": dlx}
    if settings.queue_type == "quorum":
        args.update(
            {
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                # a message that crashes consumers over and over ends in the dead-letter queue
                "x-delivery-limit": DELIVERY_LIMIT,
            }
        )
    return args


async def declare(
    channel: AbstractChannel, settings: BrokerSettings, accounts: list[str], sources: Sequence[str] = ()
) -> Topology:
    """Declare (idempotently) every exchange and queue lmsbridge uses."""
    names = Names(settings.prefix)
    exchange = await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    delay_exchange = await channel.declare_exchange(names.delay_exchange, aio_pika.ExchangeType.HEADERS, durable=True)
    dead_exchange = await channel.declare_exchange(names.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    quorum: dict[str, Any] = {"x-queue-type": "quorum"} if settings.queue_type == "quorum" else {}

    dead = await channel.declare_queue(names.dead, durable=True, arguments=quorum)
    await dead.bind(dead_exchange, routing_key="")

    for name, key in work_queues(names, sources, accounts).items():
        await declare_work_queue(channel, settings, name, key)

    for level, seconds in enumerate(settings.retry_delays):
        args: dict[str, Any] = {
            "x-message-ttl": int(seconds * 1000),
            "x-dead-letter-exchange": names.exchange,
        }
        if settings.queue_type == "quorum":
            args.update(
                {
                    "x-queue-type": "quorum",
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            )
        queue = await channel.declare_queue(names.delay(level), durable=True, arguments=args)
        await queue.bind(delay_exchange, arguments={"x-match": "all", DELAY_HEADER: level})
    return Topology(names, exchange, delay_exchange, dead_exchange)


def work_queues(names: Names, sources: Sequence[str], accounts: Sequence[str]) -> dict[str, str]:
    """Every work queue (intake, shared and per source, and sync per account) with its routing key."""
    return {
        names.events: EVENTS_KEY,
        **{names.intake(source): events_key(source) for source in sources},
        **{names.sync(account): sync_key(account) for account in accounts},
    }


async def declare_work_queue(channel: AbstractChannel, settings: BrokerSettings, name: str, key: str) -> AbstractQueue:
    """Declare one work queue and bind it to the main exchange under ``key``.

    The consumers declare their queues this way too, not passively: aio-pika then records the
    queue's arguments and binding, and when RabbitMQ cancels a consumer because its queue was
    deleted (by hand, or by a policy), its consumer recovery declares the queue again and consumes.
    """
    names = Names(settings.prefix)
    queue = await channel.declare_queue(name, durable=True, arguments=_work_queue_args(settings, names.dead))
    await queue.bind(names.exchange, routing_key=key)
    return queue


def delay_level(settings: BrokerSettings, seconds: float) -> int:
    """The first delay level at least ``seconds`` long (the last level when none is)."""
    for level, step in enumerate(settings.retry_delays):
        if step >= seconds:
            return level
    return len(settings.retry_delays) - 1


def jittered_level(settings: BrokerSettings, seconds: float, rng: random.Random | None = None) -> int:
    """A delay level for a backoff of ``seconds``, rounded at random to a neighbouring level so that
    the mean delay stays ``seconds`` (the delay queues are a fixed ladder of TTLs).

    Only levels up to ``backoff_cap`` are used (the first level always is); shorter than the
    first level rounds up to it.
    """
    ladder = sorted((step, level) for level, step in enumerate(settings.retry_delays))
    usable = [rung for rung in ladder if rung[0] <= settings.backoff_cap] or ladder[:1]
    if seconds <= usable[0][0]:
        return usable[0][1]
    for (low, low_level), (high, high_level) in itertools.pairwise(usable):
        if seconds <= high:
            up = (seconds - low) / (high - low) if high > low else 1.0
            return high_level if (rng or random).random() < up else low_level
    return usable[-1][1]
