"""Finding people's StackOne user ids: LMSs that ignore ``filter[email]``, and people the LMS lacks."""

from __future__ import annotations

import asyncio

import pytest

from lmsbridge.runtime import Runtime
from lmsbridge.testing.stackone import StackOneStandIn
from tests.delivery.conftest import Sender, Start, assign, calls, record_count, settled, sync_status, wait_for
from tests.pipeline.conftest import ACCOUNT, SettingsFactory


def _people(n: int) -> list[str]:
    return [f"person{i:02d}@acme.example" for i in range(n)]


async def test_an_lms_ignoring_the_email_filter_gets_the_right_ids_and_no_more_filter_calls(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, blind_stackone: StackOneStandIn
) -> None:
    """With 60 users and the filter ignored: every assignment goes to its own person, the account is
    marked ``email_filter == "ignored"`` and later people cost no filter call."""
    lms = blind_stackone
    people = _people(60)
    ids = {email: lms.add_user(ACCOUNT, email) for email in people}
    settings = make_settings(stackone={"base_url": lms.url, "page_size": 25})
    runtime = await start_runtime(settings)
    assert runtime.repo is not None
    sender = sender_for(runtime)

    # First someone beyond the first page: the filter call answers 25 other people.
    await assign(sender, people[45], scenario="s45")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    assert (await runtime.repo.accounts.account(ACCOUNT)).email_filter == "ignored"
    assert len(calls(lms, "GET", "/unified/lms/users", query="filter[email]")) == 1

    before = len(calls(lms, "GET", "/unified/lms/users"))
    later = [0, 24, 25, 59, 30]  # on the filter call's page, and only in the directory
    for i in later:
        await assign(sender, people[i], scenario=f"s{i}")
    assert await settled(runtime) == {ACCOUNT: {"synced": 6}}

    assert len(calls(lms, "GET", "/unified/lms/users", query="filter[email]")) == 1
    assert len(calls(lms, "GET", "/unified/lms/users")) == before
    # One scenario per person, so each assignment names whose it is.
    written = {a["body"]["learning_object_external_reference"]: a["user_id"] for a in lms.assignments(ACCOUNT)}
    assert written == {f"exec:scenario:s{i}": ids[people[i]] for i in [45, *later]}
    assert len(lms.assignments(ACCOUNT)) == 6
    assert lms.violations == []


async def _parked(runtime: Runtime) -> bool:
    return await sync_status(runtime, ACCOUNT) == {"parked": 1}


async def test_a_person_unknown_to_the_lms_is_parked_then_synced_after_a_directory_refresh(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Unknown to the LMS: parked as user_not_found with nothing written; added to the LMS, the next
    directory refresh finds them and the record syncs."""
    stackone.add_user(ACCOUNT, "someone.else@acme.example")
    runtime = await start_runtime(make_settings(stackone={"directory_refresh_seconds": 1}))
    assert runtime.repo is not None
    newcomer = "new.hire@acme.example"

    await assign(sender_for(runtime), newcomer)

    await wait_for(lambda: _parked(runtime), what="the record to be parked")
    assert await runtime.repo.stats.top_reasons("parked") == [("user_not_found", 1)]
    assert record_count(runtime, "parked") >= 1
    assert stackone.writes() == 0
    assert stackone.assignments() == []

    uid = stackone.add_user(ACCOUNT, newcomer)

    async def synced() -> bool:
        return await sync_status(runtime, ACCOUNT) == {"synced": 1}

    await wait_for(synced, timeout=10, what="the record to sync after a refresh")
    assert await settled(runtime) == {ACCOUNT: {"synced": 1}}
    [assignment] = stackone.assignments(ACCOUNT)
    assert assignment["user_id"] == uid
    refreshes = calls(stackone, "GET", "/unified/lms/users", query="filter[updated_after]")
    assert refreshes, "no incremental directory refresh was made"
    assert stackone.violations == []


async def test_records_of_one_new_person_synced_side_by_side_share_one_user_lookup(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Twelve assignments of one person the worker has not seen, sent at once: all twelve reach the
    LMS under that person's id, and StackOne is asked for the person once, not once per record."""
    email = "new.hire@acme.example"
    user_id = stackone.add_user(ACCOUNT, email)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)

    await asyncio.gather(*(assign(sender, email, scenario=f"s{i}") for i in range(12)))
    assert await settled(runtime) == {ACCOUNT: {"synced": 12}}

    assert len(calls(stackone, "GET", "/unified/lms/users", query="filter[email]")) == 1
    assert {a["user_id"] for a in stackone.assignments(ACCOUNT)} == {user_id}
    assert len(stackone.assignments(ACCOUNT)) == 12


@pytest.mark.parametrize("inactive", [False, "false"])
async def test_an_email_shared_with_a_deactivated_user_resolves_to_the_active_one(
    make_settings: SettingsFactory,
    start_runtime: Start,
    sender_for: Sender,
    stackone: StackOneStandIn,
    inactive: bool | str,
) -> None:
    """Jane's e-mail names a leaver's deactivated account (listed first) and her active one: her
    assignment lands on the active one (before, ``filter[email]``'s first match: the deactivated one).
    Sam has only a deactivated account: his lands there, as before. ``active`` as a boolean and as
    the spec's string form."""
    jane, sam = "jane.smith@acme.example", "sam.jones@acme.example"
    stackone.add_user(ACCOUNT, jane, active=inactive)
    active = stackone.add_user(ACCOUNT, jane)
    sams = stackone.add_user(ACCOUNT, sam, active=inactive)
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)

    await assign(sender, jane, scenario="jane")
    await assign(sender, sam, scenario="sam")

    assert await settled(runtime) == {ACCOUNT: {"synced": 2}}
    owners = {a["body"]["learning_object_external_reference"]: a["user_id"] for a in stackone.assignments(ACCOUNT)}
    assert owners == {"exec:scenario:jane": active, "exec:scenario:sam": sams}
    assert len(calls(stackone, "GET", "/unified/lms/users", query="filter[email]")) == 2
    assert stackone.violations == []
