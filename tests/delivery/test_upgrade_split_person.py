"""Upgrading a deployment whose person was split in two records before revision 0005 writes nothing
more for that person to the LMS once the workers of the new version run (revision 0008 merged them)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lmsbridge.storage.tables import records
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Start, calls, settled, wait_for
from tests.pipeline.conftest import ACCOUNT, SettingsFactory
from tests.storage.test_migration_merge_twins import NFC, split_person_at_0004


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh SQLite file or PostgreSQL database (set up before the runtime, so dropped after it)."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


async def test_a_person_split_before_0005_gets_no_worse_completion_written_after_the_upgrade(
    database_url: str,
    make_settings: SettingsFactory,
    start_runtime: Start,
    stackone: StackOneStandIn,
) -> None:
    """A deployment upgraded from 0004 with one person split in two records (his e-mail once sent
    decomposed, once as the LMS lists it; the first parked as unknown, the second's Pass written):
    after ``migrate`` and the directory refreshes that retry parked people, the LMS gets nothing
    more for him: no Fail after his Pass (README: "a worse one never"), and no second assignment.

    Before 0008 the decomposed record stayed apart under its old key, the refresh unparked it,
    ``People.resolve`` folded its key to his LMS user, and its assignment and its Fail were written."""
    user_id = stackone.add_user(ACCOUNT, NFC)
    await split_person_at_0004(database_url, user_id)
    runtime = await start_runtime(make_settings(database_url=database_url, stackone={"directory_refresh_seconds": 1}))

    async def refreshed_twice() -> bool:
        return len(calls(stackone, "GET", "/unified/lms/users", query="filter[updated_after]")) >= 2

    await wait_for(refreshed_twice, timeout=15, what="two directory refreshes")
    await settled(runtime)

    assert runtime.repo is not None
    async with runtime.repo.engine.connect() as conn:
        keys = sorted(ascii(r.person_key) for r in await conn.execute(sa.select(records)))
    written = [(c["user_id"], c["body"].get("result")) for c in stackone.completions(ACCOUNT)]
    assert written == [], f"completions written after the upgrade: {written}; records now {keys}"
    assert stackone.assignments(ACCOUNT) == [], f"assignments written after the upgrade; records now {keys}"
