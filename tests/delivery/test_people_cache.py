"""The people cache (issue 13 item 13): a user deleted and created again in the LMS is found under the new id.

Before the fix, ``People._cache`` kept an e-mail's first StackOne id until the process
restarted: every later write for that person went to the deleted id, got 404, and was
parked as ``user_not_found``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from lmsbridge.people import People
from lmsbridge.settings import StackOneSettings
from lmsbridge.stackone import StackOneClient
from lmsbridge.storage import Repository, create_engine
from lmsbridge.storage.migrate import upgrade
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, settled
from tests.pipeline.conftest import ACCOUNT, STACKONE_KEY, SettingsFactory

JANE = "jane.smith@acme.example"


@pytest.fixture
async def repo(sqlite_url: str) -> AsyncIterator[Repository]:
    """A migrated repository on a fresh SQLite file."""
    repository = Repository(create_engine(sqlite_url))
    await upgrade(repository.engine)
    yield repository
    await repository.close()


@contextlib.asynccontextmanager
async def lms_and_client(
    spec: Path, *, page_size: int = 100, **standin: bool
) -> AsyncIterator[tuple[StackOneStandIn, StackOneClient]]:
    """A running StackOne stand-in and a client for it, asking for ``page_size`` rows a page."""
    lms = StackOneStandIn(api_key=STACKONE_KEY, spec_path=spec, **standin)
    await lms.start()
    try:
        async with aiohttp.ClientSession() as session:
            settings = StackOneSettings(base_url=lms.url, api_key=STACKONE_KEY, page_size=page_size)
            yield lms, StackOneClient(session, settings, user_agent="t")
    finally:
        await lms.close()


@pytest.mark.parametrize("filter_honoured", [True, False])
async def test_a_directory_refresh_drops_the_ids_held_in_memory(
    repo: Repository, stackone_spec: Path, filter_honoured: bool
) -> None:
    """Jane resolved, then deleted and created again in the LMS: after the account's directory refresh
    (and, without one, once ``directory_refresh_seconds`` has passed) she resolves to her new id.
    Runs against an LMS that honours ``filter[email]`` and one that ignores it."""
    now = [datetime(2026, 6, 1, 12, tzinfo=UTC)]
    async with lms_and_client(stackone_spec, honour_email_filter=filter_honoured) as (lms, client):
        people = People(repo.directory, repo.accounts, client, refresh_after=900.0, clock=lambda: now[0])
        old = lms.add_user(ACCOUNT, JANE)
        assert await people.resolve(ACCOUNT, JANE) == old

        lms.delete_user(ACCOUNT, old)
        new = lms.add_user(ACCOUNT, JANE)
        now[0] += timedelta(seconds=1)
        await people.refresh(ACCOUNT)
        assert await people.resolve(ACCOUNT, JANE) == new

        # Without a refresh: the id in memory expires after refresh_after, and the directory answers.
        await repo.directory.save_users(ACCOUNT, [(JANE, "usr-newest")])
        now[0] += timedelta(seconds=899)
        assert await people.resolve(ACCOUNT, JANE) == new
        now[0] += timedelta(seconds=2)
        assert await people.resolve(ACCOUNT, JANE) == "usr-newest"


async def test_a_404_for_a_known_user_id_looks_the_person_up_again_once(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Jane's first assignment goes to her id; the LMS then deletes her and creates her again. Her next
    assignment gets 404 under the old id, is looked up again and lands under the new id (before the
    fix it was parked as user_not_found). Deleted for good, the next one is parked after one lookup."""
    old = stackone.add_user(ACCOUNT, JANE)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    await assign(sender, JANE, scenario="first")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}

    stackone.delete_user(ACCOUNT, old)
    new = stackone.add_user(ACCOUNT, JANE)
    await assign(sender, JANE, scenario="second")

    assert await settled(runtime) == {ACCOUNT: {"synced": 2}}
    owners = {a["body"]["learning_object_external_reference"]: a["user_id"] for a in stackone.assignments(ACCOUNT)}
    assert owners == {"exec:scenario:first": old, "exec:scenario:second": new}

    stackone.delete_user(ACCOUNT, new)
    await assign(sender, JANE, scenario="third")
    assert await settled(runtime) == {ACCOUNT: {"synced": 2, "parked": 1}}
    refused = [r for r in calls(stackone, "POST", "/assignments") if r.status == 404]
    assert [r.path for r in refused] == [
        f"/unified/lms/users/{old}/assignments",
        f"/unified/lms/users/{new}/assignments",
    ]
    assert stackone.violations == []


async def test_ids_held_in_memory_are_let_go_once_they_expire_or_past_a_bound(
    repo: Repository, stackone_spec: Path
) -> None:
    """A long-running worker meets ever new people: the ids it holds in memory are dropped once older
    than ``directory_refresh_seconds`` even if those people never come back (before, they were
    dropped only when looked up again: a worker meeting a million people held a million ids), and
    never more than ``max_remembered`` at once, the oldest going first."""
    now = [datetime(2026, 6, 1, 12, tzinfo=UTC)]
    async with lms_and_client(stackone_spec) as (lms, client):
        people = People(repo.directory, repo.accounts, client, refresh_after=900.0, clock=lambda: now[0])
        emails = [f"person{i}@acme.example" for i in range(6)]
        ids = [lms.add_user(ACCOUNT, email) for email in emails]
        for email in emails[:4]:
            await people.resolve(ACCOUNT, email)
            now[0] += timedelta(seconds=100)
        assert len(people) == 4
        now[0] += timedelta(seconds=600)  # the first is 1,000 s old, the second 900, the others younger
        assert await people.resolve(ACCOUNT, emails[4]) == ids[4]
        assert len(people) == 3  # persons 2, 3 and 4: 0 and 1 expired though never asked for again

        bounded = People(
            repo.directory, repo.accounts, client, refresh_after=900.0, clock=lambda: now[0], max_remembered=2
        )
        for email, user_id in zip(emails, ids, strict=True):
            assert await bounded.resolve(ACCOUNT, email) == user_id
        assert len(bounded) == 2
        assert await bounded.resolve(ACCOUNT, emails[0]) == ids[0]  # from the directory again
