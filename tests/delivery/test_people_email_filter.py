"""A person the platform and the LMS both write one non-ASCII way is found by ``filter[email]``.

Records are keyed by ``email_key`` (composed, the domain decoded), and the key was what the filter
was asked for. An LMS whose filter compares exactly holds ``hans@xn--bcher-kva.example`` or a
decomposed "é" as written, not the key: a new hire written so by both was parked as
``user_not_found`` until the next directory refresh (15 minutes by default) when the directory was
refreshed a moment before, where before keys were folded they were found at once.
"""

from __future__ import annotations

import pytest

from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import exec_assignment, exec_event
from tests.delivery.conftest import Sender, Start, calls, settled
from tests.pipeline.conftest import ACCOUNT, SettingsFactory


@pytest.mark.parametrize(
    "written",
    ["hans@xn--bcher-kva.example", "jose\u0301@acme.example", "Jose\u0301@XN--BCHER-KVA.example"],
    ids=ascii,
)
async def test_a_person_the_lms_lists_exactly_as_the_platform_sends_is_found_by_the_email_filter(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn, written: str
) -> None:
    """A new hire whose e-mail has an IDNA-encoded domain or a decomposed accent, written the same
    way by the platform and by the LMS (which honours ``filter[email]``), is found at once and
    synced even when the directory was refreshed a moment ago. An ASCII e-mail the LMS lacks costs
    one filter call, as before."""
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    # Someone the LMS does not have yet: the lookup refreshes the directory, the record is parked.
    status, _ = await sender.post(
        "acme-sales", exec_event("assignment.created", exec_assignment("as-0", "nobody@acme.example", scenario="s0"))
    )
    assert status == 202
    assert await settled(runtime) == {ACCOUNT: {"parked": 1}}
    assert len(calls(stackone, "GET", "/unified/lms/users", query="filter[email]")) == 1

    user = stackone.add_user(ACCOUNT, written)
    status, _ = await sender.post(
        "acme-sales", exec_event("assignment.created", exec_assignment("as-1", written, scenario="s1"))
    )
    assert status == 202
    assert await settled(runtime) == {ACCOUNT: {"parked": 1, "synced": 1}}
    assert [a["user_id"] for a in stackone.assignments(ACCOUNT)] == [user]
