"""The StackOne rate budget in the database, so every process using one API key draws from it.

StackOne counts requests per API key in a sliding minute, across every process that uses
the key. The budget is one row per key holding ``next_slot``: the earliest moment no process
has been given yet. A process claims a few slots at a time; a claim moves ``next_slot`` on by
``count x interval`` in one short transaction (the row locked with ``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises the whole transaction). The slots of all
processes are therefore disjoint and evenly spaced, whoever holds them, so the requests in any
window of any length stay within the rate, however many processes there are and however
they come and go.

Times are the database's clock (``clock_timestamp()`` on PostgreSQL; on SQLite, one host's
clock), returned with each grant so a process can place its slots on its own clock whatever
its skew. No process may hold slots further than ``horizon`` ahead of now, so a process that
dies takes at most that much of the budget with it, and a new one gets its turn within it.

A pause (a 429's ``Retry-After``) is kept in the same row: no claim is granted a slot before it.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lmsbridge.storage.database import open_database
from lmsbridge.storage.shared import dialect_insert
from lmsbridge.storage.tables import rate_budget, rate_budget_holders

__all__ = ["BudgetHolder", "BudgetState", "BudgetStore", "Grant", "key_id"]

_HOLDER_IDLE = 3600.0  # seconds without a claim before a holder's row is pruned


def key_id(base_url: str, api_key: str) -> str:
    """A stable, non-reversible name for one API key at one StackOne base URL (the key never leaves memory)."""
    return hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Grant:
    """Slots given to one claim, on the database's clock.

    ``count`` slots at ``first``, ``first + interval``, ...; when ``count`` is 0 the horizon is
    full (or a pause is on) and ``retry_at`` is when a claim can next succeed.
    """

    first: float
    count: int
    now: float
    retry_at: float
    paused_until: float


@dataclass(frozen=True, slots=True)
class BudgetHolder:
    """One process's draw on a key's budget."""

    holder: str
    claimed_total: int
    first_claim_at: float
    last_claim_at: float
    age: float  # seconds since its last claim


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A key's budget as ``lmsbridge status`` shows it (times relative to the database's now)."""

    reserved_ahead: float  # seconds of slots already given out beyond now
    paused_for: float
    holders: list[BudgetHolder]


def _now(conn: Connection) -> float:
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
    return time.time()


def _not_flushed(conn: Connection) -> None:
    """On PostgreSQL, this transaction's commit does not wait for the disk (SQLite: see the store)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL synchronous_commit = off"))


def _locked_row(conn: Connection, key: str) -> tuple[float, float]:
    """``(next_slot, paused_until)`` of ``key``'s row, locked until the transaction ends (created if absent).

    Callers read the clock after this: a claim's ``now`` taken before waiting for another
    process's lock would be stale by that wait, and the claimer would place its slots that much
    late on its own clock, crowding the slots given next.
    """
    query = select(rate_budget.c.next_slot, rate_budget.c.paused_until).where(rate_budget.c.key_id == key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        conn.execute(
            dialect_insert(conn.dialect.name)(rate_budget)
            .values(key_id=key, next_slot=0.0, paused_until=0.0)
            .on_conflict_do_nothing(index_elements=["key_id"])
        )
        row = conn.execute(query).one()
    return float(row.next_slot), float(row.paused_until)


def _note_holder(conn: Connection, key: str, holder: str, count: int, now: float) -> None:
    stmt = dialect_insert(conn.dialect.name)(rate_budget_holders).values(
        key_id=key, holder=holder, claimed_total=count, first_claim_at=now, last_claim_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key_id", "holder"],
            set_={
                "claimed_total": rate_budget_holders.c.claimed_total + count,
                "last_claim_at": now,
            },
        )
    )
    if random.random() < 1 / 256:
        conn.execute(
            delete(rate_budget_holders).where(
                rate_budget_holders.c.key_id == key, rate_budget_holders.c.last_claim_at < now - _HOLDER_IDLE
            )
        )


class BudgetStore:
    """Claims and pauses on the shared budget rows; one per process, closed with it."""

    def __init__(self, engine: AsyncEngine) -> None:
        # A claim lost to a crash costs at most a few slots given twice: no flush to disk per claim.
        self._db = open_database(engine, durable=False)

    async def claim(self, key: str, holder: str, want: int, interval: float, horizon: float) -> Grant:
        """Up to ``want`` slots ``interval`` apart, none later than ``horizon`` seconds past now."""

        def work(conn: Connection) -> Grant:
            _not_flushed(conn)
            next_slot, paused_until = _locked_row(conn, key)
            now = _now(conn)
            first = max(next_slot, now, paused_until)
            if first > now + horizon:
                return Grant(first, 0, now, first - horizon, paused_until)
            conn.execute(
                update(rate_budget).where(rate_budget.c.key_id == key).values(next_slot=first + want * interval)
            )
            _note_holder(conn, key, holder, want, now)
            return Grant(first, want, now, now, paused_until)

        result: Grant = (await self._db.write([work]))[0]
        return result

    async def pause(self, key: str, seconds: float) -> float:
        """No slot for anyone before now + ``seconds`` (a pause is extended, never shortened); the database's now."""

        def work(conn: Connection) -> float:
            _next_slot, paused_until = _locked_row(conn, key)
            now = _now(conn)
            if now + seconds > paused_until:
                conn.execute(update(rate_budget).where(rate_budget.c.key_id == key).values(paused_until=now + seconds))
            return now

        result: float = (await self._db.write([work]))[0]
        return result

    async def sharers(self, key: str, within: float) -> int:
        """How many holders claimed slots of ``key`` in the last ``within`` seconds (the database's clock)."""

        def work(conn: Connection) -> int:
            since = _now(conn) - within
            query = select(func.count()).where(
                rate_budget_holders.c.key_id == key, rate_budget_holders.c.last_claim_at >= since
            )
            return int(conn.execute(query).scalar_one())

        return await self._db.read(work)

    async def state(self, key: str, *, active_within: float = 60.0) -> BudgetState:
        """What ``status`` shows: slots reserved ahead, a pause, and the holders active in the last minute."""

        def work(conn: Connection) -> BudgetState:
            now = _now(conn)
            row = conn.execute(
                select(rate_budget.c.next_slot, rate_budget.c.paused_until).where(rate_budget.c.key_id == key)
            ).first()
            holders = conn.execute(
                select(rate_budget_holders)
                .where(
                    rate_budget_holders.c.key_id == key,
                    rate_budget_holders.c.last_claim_at >= now - active_within,
                )
                .order_by(rate_budget_holders.c.holder)
            ).all()
            return BudgetState(
                reserved_ahead=max(0.0, float(row.next_slot) - now) if row is not None else 0.0,
                paused_for=max(0.0, float(row.paused_until) - now) if row is not None else 0.0,
                holders=[
                    BudgetHolder(
                        h.holder,
                        int(h.claimed_total),
                        float(h.first_claim_at),
                        float(h.last_claim_at),
                        max(0.0, now - float(h.last_claim_at)),
                    )
                    for h in holders
                ],
            )

        return await self._db.read(work)

    async def close(self) -> None:
        """Release the store's connection (and, on SQLite, its thread)."""
        await self._db.close()
