"""The repository as a whole on both databases: its parts share one group commit; migrations match the tables."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from lmsbridge.errors import InfrastructureFault
from lmsbridge.storage import PENDING, Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.storage.tables import metadata
from tests.storage.conftest import ACCOUNTS, event


async def test_concurrent_writes_share_one_transaction(repo: Repository) -> None:
    """Writes issued concurrently are committed together (group commit), each with its own result."""
    items = [event(f"m{i}", emails=(f"p{i}@acme.example",)) for i in range(20)]
    before = repo.transactions
    results = await asyncio.gather(*(repo.intake.ingest([(e, e.people)], ACCOUNTS) for e in items))
    assert len({r[0].record_ids for r in results}) == 20
    assert repo.transactions - before < 20
    assert (await repo.stats.status_counts())["acc-1"] == {PENDING: 20}


async def test_writes_of_different_parts_share_one_transaction(repo: Repository) -> None:
    """An event stored, a user saved and an account paused at the same moment are committed together:
    the parts run on one group commit, not one each."""
    before = repo.transactions
    e = event("m1")
    await asyncio.gather(
        repo.intake.ingest([(e, e.people)], ACCOUNTS),
        repo.directory.save_users("acc-1", [("jane@acme.example", "u-1")]),
        repo.accounts.update_account("acc-1", paused=True, reason="403"),
    )
    assert repo.transactions - before == 1
    assert await repo.directory.user_id("acc-1", "jane@acme.example") == "u-1"
    assert (await repo.accounts.account("acc-1")).paused


async def test_migrations_match_the_tables(repo: Repository) -> None:
    """The schema the migrations build is exactly the schema the code declares."""

    def diff(conn: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with repo.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await upgrade(repo.engine)  # a second upgrade is a no-op


async def test_a_sqlite_fault_is_named_by_its_result_code_and_never_by_its_text(tmp_path: Path) -> None:
    """A statement SQLite refuses (here: no tables yet) surfaces as an InfrastructureFault naming
    SQLite's result code, which tells an operator a full disk (SQLITE_FULL) from a locked file
    (SQLITE_BUSY); never the driver's text, which may quote values."""
    repo = Repository(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bare.db'}"))
    try:
        with pytest.raises(InfrastructureFault) as caught:
            await repo.accounts.account("acc-1")
        assert str(caught.value) == "database: OperationalError (OperationalError, SQLITE_ERROR)"
    finally:
        await repo.close()


PROBE_ON_A_FULL_DISK = """
import asyncio, resource, signal, sys
from lmsbridge.errors import InfrastructureFault
from lmsbridge.storage import Repository, create_engine

async def main(path):
    repo = Repository(create_engine("sqlite+aiosqlite:///" + path))
    try:
        await repo.create_schema()
        await repo.check_writes()  # a disk with room: the probe commits
        # The disk is full from here: no file may grow past a byte (a write past it fails, EFBIG).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        try:
            await repo.check_writes()
            print("probe passed")
        except InfrastructureFault as exc:
            print("probe failed:", exc)
    finally:
        await repo.close()

asyncio.run(main(sys.argv[1]))
"""


def test_the_write_probe_fails_on_a_full_disk(tmp_path: Path) -> None:
    """The probe a worker paused on its database runs before it resumes fails while no write can
    land (a full disk: no file may grow), naming SQLite's result code (before: it only began a
    transaction and read, so it passed, the worker resumed, every write failed again, and the
    ``database_paused`` gauge went 1, 0, 1 with a "database.resumed" each minute)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE_ON_A_FULL_DISK, str(tmp_path / "full.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("probe failed: database: OperationalError"), result.stdout
    assert "SQLITE_FULL" in result.stdout or "SQLITE_IOERR" in result.stdout, result.stdout
