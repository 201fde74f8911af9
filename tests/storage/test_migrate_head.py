"""The newest revision is known without Alembic, and a current database is opened without it
(Alembic and Mako are about 11 MB of each process's memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import alembic_config, head, revisions, upgrade


def test_the_revisions_read_from_the_files_are_alembics() -> None:
    """Every migration Alembic finds, with the revision it follows, and the same newest one."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert revisions() == {s.revision: s.down_revision for s in scripts.walk_revisions()}
    assert head() == scripts.get_current_head()


_CHECK = """
import asyncio, sys
from lmsbridge.storage import create_engine
from lmsbridge.storage.migrate import require_current_schema, schema_behind, upgrade

async def main() -> None:
    engine = create_engine(sys.argv[1])
    await upgrade(engine)
    await require_current_schema(engine)
    assert await schema_behind(engine) is None
    await engine.dispose()

import lmsbridge.runtime  # everything serve and worker import
asyncio.run(main())
print("alembic" in sys.modules, "mako" in sys.modules)
"""


async def test_a_process_finding_its_database_current_never_imports_alembic(tmp_path: Path) -> None:
    """A worker or receiver starting on a database already at the newest revision checks it and
    goes on without loading Alembic (before: imported with the runtime, 11 MB of every process)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'lmsbridge.db'}"
    engine = create_engine(url)
    await upgrade(engine)  # migrated here, by another process
    await engine.dispose()
    done = subprocess.run([sys.executable, "-c", _CHECK, url], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


async def test_a_database_behind_is_still_migrated_by_alembic(tmp_path: Path) -> None:
    """A database at an older revision is brought to the newest one, as before."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'lmsbridge.db'}"
    engine = create_engine(url)
    await upgrade(engine, "0003")
    await engine.dispose()
    done = subprocess.run([sys.executable, "-c", _CHECK, url], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]
