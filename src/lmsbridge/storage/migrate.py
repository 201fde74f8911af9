"""Schema migrations with Alembic, run from code (``lmsbridge migrate`` and at worker start).

Migrations cannot race: ten workers starting at once on a fresh database migrate it once.
On PostgreSQL the migrating transaction first takes a transaction-scoped advisory lock
(``pg_advisory_xact_lock``), so the others wait, then find the schema current; on SQLite the
transaction begins with ``BEGIN IMMEDIATE`` (see :mod:`lmsbridge.storage.engine`), which holds
the database's write lock from the start.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
# The advisory lock's key: any fixed 64-bit number other applications on the database are unlikely to use.
MIGRATION_LOCK_KEY = 0x6C6D7362_6D696772  # "lmsbmigr"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    command.upgrade(alembic_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (idempotent; concurrent callers migrate once)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def schema_behind(engine: AsyncEngine) -> str | None:
    """None when the database's schema is at the newest revision; otherwise what it is at.

    ``"none"`` for a database never migrated, else the revision it holds.
    """
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with engine.connect() as conn:
        current = await conn.run_sync(_current)
    return None if current == head else (current or "none")
