"""An e-mail shared by a deactivated LMS user (a leaver's account) and an active one.

Before the fix the directory ignored StackOne's ``active``: it named the last user listed, so a
listing that put the deactivated account last, or a refresh re-listing a user just deactivated,
sent the person's records to the deactivated account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lmsbridge.people import People
from lmsbridge.storage import Repository
from tests.delivery.test_people_cache import lms_and_client, repo  # noqa: F401  (fixtures are found by name)
from tests.pipeline.conftest import ACCOUNT

JANE = "jane.smith@acme.example"
SAM = "sam.jones@acme.example"
SOMEONE = "someone.else@acme.example"


async def test_an_lms_ignoring_the_email_filter_fills_the_directory_with_the_active_user(
    repo: Repository,  # noqa: F811  (the fixture imported above)
    stackone_spec: Path,
) -> None:
    """An LMS ignoring ``filter[email]`` answers a lookup of someone else with everyone, Jane's active
    account listed before her deactivated one: the directory names the active one (before, the last
    listed: the deactivated one). Sam, who has only a deactivated account, is still found there."""
    async with lms_and_client(stackone_spec, honour_email_filter=False) as (lms, client):
        lms.add_user(ACCOUNT, SOMEONE)
        active = lms.add_user(ACCOUNT, JANE)
        lms.add_user(ACCOUNT, JANE, active=False)
        sam = lms.add_user(ACCOUNT, SAM, active="false")
        people = People(repo.directory, repo.accounts, client, refresh_after=900.0)

        await people.resolve(ACCOUNT, SOMEONE)  # fills the directory with the others listed

        assert (await repo.accounts.account(ACCOUNT)).email_filter == "ignored"
        assert await repo.directory.user_id(ACCOUNT, JANE) == active
        assert await people.resolve(ACCOUNT, JANE) == active
        assert await people.resolve(ACCOUNT, SAM) == sam
        assert lms.violations == []


@pytest.mark.parametrize("page_size", [100, 1])
async def test_a_directory_refresh_never_moves_a_person_to_a_deactivated_user(
    repo: Repository,  # noqa: F811  (the fixture imported above)
    stackone_spec: Path,
    page_size: int,
) -> None:
    """Jane has two LMS accounts and the directory names her newer one. Her old one is deactivated:
    the refresh re-listing it leaves her on the newer one (before, the old one replaced it). Then the
    old one is reactivated and the newer one deactivated, listed in that order: she moves to the
    old one (before, the last listed won: the deactivated one). The same with one user a page."""
    now = [datetime(2026, 6, 1, 12, tzinfo=UTC)]
    async with lms_and_client(stackone_spec, page_size=page_size) as (lms, client):
        old = lms.add_user(ACCOUNT, JANE, updated_at=now[0] - timedelta(days=30))
        new = lms.add_user(ACCOUNT, JANE, updated_at=now[0] - timedelta(days=1))
        people = People(repo.directory, repo.accounts, client, refresh_after=900.0, clock=lambda: now[0])
        await people.refresh(ACCOUNT)  # both active: the last listed, as before
        assert await people.resolve(ACCOUNT, JANE) == new

        lms.add_user(ACCOUNT, JANE, user_id=old, active=False, updated_at=now[0] + timedelta(seconds=1))
        now[0] += timedelta(seconds=60)
        await people.refresh(ACCOUNT)
        assert await people.resolve(ACCOUNT, JANE) == new

        lms.add_user(ACCOUNT, JANE, user_id=old, updated_at=now[0] + timedelta(seconds=1))
        lms.add_user(ACCOUNT, JANE, user_id=new, active="false", updated_at=now[0] + timedelta(seconds=2))
        now[0] += timedelta(seconds=60)
        await people.refresh(ACCOUNT)
        assert await people.resolve(ACCOUNT, JANE) == old

        refreshes = [r for r in lms.requests if "filter[updated_after]" in r.query]
        assert len(refreshes) == (2 if page_size == 100 else 3)  # one user, then two users
        assert lms.violations == []
