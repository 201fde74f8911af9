"""One person whose e-mail reaches lmsbridge written several ways: one record, one LMS user.

Before the fix the key was the e-mail lower-cased, nothing more: an ``assignment.created`` whose
e-mail came in Unicode's decomposed form, with an IDNA-encoded or full-width domain, or with a
zero-width space copied in, and the ``assignment.completed`` for the same person written as the LMS
lists them, made two records; the first was parked as ``user_not_found`` for good.
"""

from __future__ import annotations

from lmsbridge.testing.stackone import StackOneStandIn
from lmsbridge.testing.webhooks import exec_assignment, exec_event
from tests.delivery.conftest import Sender, Start, settled
from tests.pipeline.conftest import ACCOUNT, SettingsFactory

# (as the LMS lists the person, as the platform's first webhook writes them)
PEOPLE = [
    ("jos\u00e9.garc\u00eda@acme.example", "Jose\u0301.Garci\u0301a@acme.example"),  # NFC, NFD
    ("hans.m\u00fcller@b\u00fccher.example", "Hans.M\u00fcller@xn--bcher-kva.example"),  # IDNA
    ("kenji.sato@acme.example", "kenji.sato@\uff41\uff43\uff4d\uff45\u3002example"),  # full width
    ("ana.lima@acme.example", "ana.lima\u200b@acme.example"),  # zero-width space
]


async def test_one_person_written_several_ways_gets_one_record_and_one_lms_assignment(
    make_settings: SettingsFactory, start_runtime: Start, sender_for: Sender, stackone: StackOneStandIn
) -> None:
    """Each person's assignment comes with their e-mail in another form than the LMS's, then their
    completion in the LMS's form: each has one record, synced to their LMS user (one assignment,
    one completion), and nothing is parked."""
    users = {listed: stackone.add_user(ACCOUNT, listed) for listed, _ in PEOPLE}
    runtime = await start_runtime(make_settings())
    sender = sender_for(runtime)
    for i, (listed, sent) in enumerate(PEOPLE):
        scenario = f"s{i}"
        status, body = await sender.post(
            "acme-sales", exec_event("assignment.created", exec_assignment(f"as-{i}", sent, scenario=scenario))
        )
        assert status == 202, body
        assert await settled(runtime) == {ACCOUNT: {"synced": i + 1}}
        done = exec_assignment(f"as-{i}", listed, scenario=scenario, status="completed", best_score=90)
        status, body = await sender.post("acme-sales", exec_event("assignment.completed", done))
        assert status == 202, body

    assert await settled(runtime) == {ACCOUNT: {"synced": len(PEOPLE)}}
    owners = {a["body"]["learning_object_external_reference"]: a["user_id"] for a in stackone.assignments(ACCOUNT)}
    assert owners == {f"exec:scenario:s{i}": users[listed] for i, (listed, _) in enumerate(PEOPLE)}
    assert len(stackone.assignments(ACCOUNT)) == len(PEOPLE)
    assert sorted(c["user_id"] for c in stackone.completions(ACCOUNT)) == sorted(users.values())
    assert stackone.violations == []
