"""Persistence edge: SQLAlchemy tables, engine and the repository (connections never leave it)."""

from lmsbridge.ports import AccountState, Ingest, SyncView
from lmsbridge.storage.engine import create_engine, is_sqlite
from lmsbridge.storage.repository import DEAD, PARKED, PENDING, SYNCED, Repository

__all__ = [
    "DEAD",
    "PARKED",
    "PENDING",
    "SYNCED",
    "AccountState",
    "Ingest",
    "Repository",
    "SyncView",
    "create_engine",
    "is_sqlite",
]
