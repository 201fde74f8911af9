"""Persistence edge: SQLAlchemy tables, engine and the repository (connections never leave it)."""

from lmsbridge.domain.sync import DEAD, PARKED, PENDING, SYNCED
from lmsbridge.ports import AccountState, Ingest, SyncView
from lmsbridge.storage.accounts import Accounts
from lmsbridge.storage.content import Content
from lmsbridge.storage.directory import Directory
from lmsbridge.storage.engine import create_engine, is_sqlite
from lmsbridge.storage.intake import Intake
from lmsbridge.storage.leases import Leases
from lmsbridge.storage.repository import Repository
from lmsbridge.storage.shared import UNSTORABLE
from lmsbridge.storage.stats import Stats

__all__ = [
    "DEAD",
    "PARKED",
    "PENDING",
    "SYNCED",
    "UNSTORABLE",
    "AccountState",
    "Accounts",
    "Content",
    "Directory",
    "Ingest",
    "Intake",
    "Leases",
    "Repository",
    "Stats",
    "SyncView",
    "create_engine",
    "is_sqlite",
]
