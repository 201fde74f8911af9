"""CPU an event costs the worker's storage on a SQLite file, as the worker runs it (issue 15).

Each event is a new record on one account, and goes through the two writes a worker makes for
it: stored with its sync row leased and the intent of its create (``Intake.ingest`` with a
lease), and the create recorded as the last write (``Leases.mark_written``, which also marks the
row synced if the record did not change). Each round then completes those records, each
completion through the two writes a worker makes for it: stored with its record's row leased
and the intent of the completion's create noted (claimed in that transaction, as its lease is
free), and the completion recorded. ``--in-flight`` events run at once, as a consumer's
prefetch does, so the writes share group commits as they do in the worker.
The repository is the real one (its SQLite thread, pool, group commit and ``synchronous=FULL``);
nothing else of the worker runs, so this is the storage's share without RabbitMQ or HTTP noise.

    .venv/bin/python bench/bench_storage.py [--events 20000] [--in-flight 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from bench_reads import sqlite_repository
from rich.console import Console
from rich.table import Table

from lmsbridge.domain import AssignmentEvent, SyncStep
from lmsbridge.domain.events import LearningObject, PersonProgress
from lmsbridge.domain.records import completion_of
from lmsbridge.ports import Lease, SyncView
from lmsbridge.storage import Repository

ACCOUNT = "acct"
OBJECTS = 50  # learning objects the events are spread over (each known on the account after its first)


def event(n: int, now: datetime, *, completed: bool = False) -> AssignmentEvent:
    """The ``n``th event: a new person assigned one of the objects (or that person's Pass of it)."""
    ref = f"exec:scenario:{n % OBJECTS}"
    person = PersonProgress(email=f"p{n}@x.example")
    if completed:
        person = PersonProgress(email=person.email, completed_at=now, passed=True, score=90.0)
    return AssignmentEvent(
        message_id=f"m-{n}-done" if completed else f"m-{n}",
        source="exec",
        platform="exec",
        type="assignment.completed" if completed else "assignment.created",
        occurred_at=now,
        received_at=now,
        correlation_id=f"c-{n}",
        assignment_id=f"a-{n}",
        learning_object=LearningObject(external_reference=ref, title=f"Scenario {n % OBJECTS}"),
        people=(person,),
    )


async def one(repo: Repository, n: int, now: datetime) -> None:
    """Store event ``n`` with its row leased and its create's intent (as the consumer does, whose
    send then writes no intent of its own), record the create as the last write."""
    holder = f"bench:{n:x}"
    new = event(n, now)
    lease = Lease(holder, time.time() + 120, SyncStep.CREATE_ASSIGNMENT)
    [stored] = await repo.intake.ingest([(new, new.people)], {"exec": [ACCOUNT]}, lease=lease)
    [view] = stored.claimed
    if not await repo.leases.mark_written(
        view.record_id, ACCOUNT, SyncStep.CREATE_ASSIGNMENT, f"lms-{n}", last=True, version=view.version
    ):
        raise RuntimeError("the record changed")


def _completion_first(view: SyncView) -> SyncStep:
    """The first create of a completed record's sync, its assignment written (as the worker's plan says)."""
    return SyncStep.CREATE_COMPLETION


async def done(repo: Repository, n: int, now: datetime) -> None:
    """Store the Pass of event ``n``'s record with its row leased and the completion's intent, record it."""
    holder = f"bench:{n:x}:done"
    completion = event(n, now, completed=True)
    lease = Lease(holder, time.time() + 120, at=time.time(), intent_of=_completion_first)
    [stored] = await repo.intake.ingest([(completion, completion.people)], {"exec": [ACCOUNT]}, lease=lease)
    [rid] = stored.record_ids
    [(view, noted)] = stored.taken
    if noted is not SyncStep.CREATE_COMPLETION:
        raise RuntimeError("the completion's intent was not noted")
    written = completion_of(view.state)
    if not await repo.leases.mark_written(
        rid, ACCOUNT, SyncStep.CREATE_COMPLETION, f"lms-{n}-done", last=True, completion=written, version=view.version
    ):
        raise RuntimeError("the record changed")


async def run_round(
    repo: Repository, first: int, events: int, in_flight: int, *, completions: bool = False
) -> tuple[float, float, int]:
    """(events a second, CPU us an event, transactions) for ``events`` events, ``in_flight`` at once:
    new records, or with ``completions`` the Passes of the records ``first`` onwards."""
    now = datetime.now(UTC)
    numbers = iter(range(first, first + events))
    step = done if completions else one

    async def lane() -> None:
        for n in numbers:
            await step(repo, n, now)

    transactions = repo.transactions
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return events / wall, 1e6 * cpu / events, repo.transactions - transactions


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    title = (
        f"The worker's storage on SQLite: {args.events:,} new records a round, then their completions,"
        f" {args.in_flight} at once"
    )
    table = Table(title=title)
    for column in ("round", "events", "events/s", "CPU us an event", "events a transaction"):
        table.add_column(column, justify="right")
    async with sqlite_repository("storage.db") as repo:
        await run_round(repo, 10_000_000, 2_000, args.in_flight)  # warm: the objects known, the caches filled
        await run_round(repo, 10_000_000, 2_000, args.in_flight, completions=True)
        for r in range(args.rounds):
            for completions in (False, True):
                rate, cpu, transactions = await run_round(
                    repo, r * args.events, args.events, args.in_flight, completions=completions
                )
                per = f"{args.events / max(transactions, 1):.1f}"
                kind = "completions" if completions else "new records"
                table.add_row(str(r + 1), kind, f"{rate:,.0f}", f"{cpu:,.0f}", per)
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
