"""``parse_event`` at its edges: what ignored types may look like, JSON paths, and arbitrary input.

Complements ``test_adapters.py``; the property tests check that no body, however odd, makes
``parse_event`` raise anything but a request refusal (so the receiver never answers 500).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedRequest, RejectRequest, UnusableBody
from lmsbridge.testing.webhooks import exec_assignment, exec_event, limeplate_assignment, limeplate_completed
from lmsbridge.vendors import Ignored, parse_event
from lmsbridge.vendors.envelope import json_path

RECEIVED = datetime(2026, 5, 29, 9, 30, tzinfo=UTC)


def parse(platform: str, body: Any, *, message_id: str | None = None) -> AssignmentEvent | Ignored:
    """``parse_event`` on ``body`` serialised as JSON (bytes pass through)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_event(platform, raw, source="s", message_id=message_id, received_at=RECEIVED, correlation_id="c")


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_ignored_type_needs_only_type_and_an_id(platform: str) -> None:
    """An unhandled type is ignored even when its ``data`` is not an object and its timestamp is nonsense."""
    body = {"id": "evt_9", "type": "assignment.archived", "timestamp": "whenever", "data": ["not", "an", "object"]}
    assert parse(platform, body) == Ignored("assignment.archived", "evt_9")
    assert parse(platform, {"type": "ping"}, message_id="msg_h") == Ignored("ping", "msg_h")


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_handled_type_needs_an_object_data(platform: str) -> None:
    """A handled type without ``data`` is 422 at path ``data``."""
    with pytest.raises(UnusableBody) as info:
        parse(platform, {"id": "evt_1", "type": "assignment.created", "timestamp": "2026-05-29T08:00:00Z"})
    assert info.value.path == "data"


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_body_id_is_limited_to_255_utf8_bytes(platform: str) -> None:
    """A body ``id`` of 255 characters but more than 255 UTF-8 bytes is 422 at ``id`` (AMQP ids are 255 bytes)."""
    assert parse(platform, {"id": "\u00e9" * 127, "type": "ping"}) == Ignored("ping", "\u00e9" * 127)
    with pytest.raises(UnusableBody) as info:
        parse(platform, {"id": "\u00e9" * 128, "type": "ping"})
    assert info.value.path == "id"


def test_json_path_renders_list_indices() -> None:
    """Validation locations become JSON paths: dotted names, ``[i]`` for list positions."""
    assert json_path(("assignment", "targetId"), "data") == "data.assignment.targetId"
    assert json_path(("userProgress", 3, "email")) == "userProgress[3].email"
    assert json_path(()) == ""


def test_limeplate_user_assignment_still_expands_through_the_api() -> None:
    """A limeplate assignment to one user also names no person: it needs expansion too."""
    body = {
        "id": "evt_u",
        "type": "assignment.created",
        "timestamp": "2026-05-29T08:00:00Z",
        "data": {"assignment": limeplate_assignment("asg-u", assignee_type="user")},
    }
    got = parse("limeplate", body)
    assert isinstance(got, AssignmentEvent)
    assert (got.needs_expansion, got.people) == (True, ())


def test_limeplate_completion_without_completed_at_leaves_it_to_the_core() -> None:
    """A limeplate completion whose ``data.user`` lacks ``completedAt`` is accepted with ``completed_at`` None."""
    body = limeplate_completed(limeplate_assignment("asg-1"), "jo@acme.example")
    del body["data"]["user"]["completedAt"]
    got = parse("limeplate", body)
    assert isinstance(got, AssignmentEvent)
    assert got.people[0].completed_at is None


def test_exec_completion_has_no_completed_at_and_no_progress() -> None:
    """Exec's completion carries no time of its own: ``completed_at`` is None, the envelope time is ``occurred_at``."""
    body = exec_event("assignment.completed", exec_assignment("ea-1", "jo.lee@acme.example", status="completed"))
    body["timestamp"] = "2026-06-02T15:04:05Z"
    got = parse("exec", body)
    assert isinstance(got, AssignmentEvent)
    (person,) = got.people
    assert (person.completed_at, person.progress, person.name) == (None, None, "Jo Lee")
    assert got.occurred_at == datetime(2026, 6, 2, 15, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("padded", [" jane@acme.example ", "\tjane@acme.example", "jane@acme.example\u00a0"])
def test_white_space_around_an_email_is_dropped_not_refused(padded: str) -> None:
    """An e-mail with white space around it (a space, a tab, a no-break space) is the person's e-mail:
    accepted as ``jane@acme.example`` (before: 422, the pattern refused it, though the person key
    strips it; a platform would retry that webhook for ever or drop it)."""
    got = parse("exec", exec_event("assignment.created", exec_assignment("ea-1", padded)))
    assert isinstance(got, AssignmentEvent)
    assert [p.email for p in got.people] == ["jane@acme.example"]
    completed = limeplate_completed(limeplate_assignment("lp-1"), padded)
    got = parse("limeplate", completed)
    assert isinstance(got, AssignmentEvent)
    assert [p.email for p in got.people] == ["jane@acme.example"]


@pytest.mark.parametrize(
    ("sent", "due"),
    [
        (253402300799, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),  # "no deadline", in seconds
        (1780000000, datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC)),
        (1780000000000, datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC)),  # milliseconds
        ("1780000000", datetime(2026, 5, 28, 20, 26, 40, tzinfo=UTC)),
    ],
    ids=["year-9999-seconds", "seconds", "milliseconds", "seconds-as-text"],
)
def test_an_epoch_due_date_is_read_as_seconds_unless_it_can_only_be_milliseconds(sent: Any, due: datetime) -> None:
    """A due date sent as an epoch number is seconds, or milliseconds from 1e12 (any date since 2001):
    9999-12-31 in seconds, a common "no deadline", stays 9999 (before: pydantic read anything past
    2e10 as milliseconds, so it reached the LMS as 1978-01-11, an assignment overdue for decades)."""
    body = exec_event("assignment.created", {**exec_assignment("ea-1", "jane@acme.example"), "due_date": sent})
    got = parse("exec", body)
    assert isinstance(got, AssignmentEvent)
    assert got.due_date == due


@pytest.mark.parametrize("platform", ["exec", "limeplate"])
@pytest.mark.parametrize(
    ("sent", "due"),
    [
        ("2026-06-12", datetime(2026, 6, 12, 23, 59, 59, tzinfo=UTC)),
        ("2026-06-12T00:00:00Z", datetime(2026, 6, 12, tzinfo=UTC)),  # a time named is kept as sent
        ("2026-06-12T09:30:00+02:00", datetime(2026, 6, 12, 7, 30, tzinfo=UTC)),
    ],
    ids=["date", "midnight-named", "with-zone"],
)
def test_a_due_date_without_a_time_is_due_at_the_end_of_that_day(platform: str, sent: str, due: datetime) -> None:
    """A deadline sent as a date alone is due at 23:59:59 UTC that day, as the platforms' own
    deadlines end (spec 003), not at its first second: read as midnight, the LMS showed it due a day
    early. A deadline with a time keeps that time."""
    if platform == "exec":
        body = exec_event("assignment.created", {**exec_assignment("ea-1", "jane@acme.example"), "due_date": sent})
    else:
        body = limeplate_completed({**limeplate_assignment("lp-1"), "deadline": sent}, "jane@acme.example")
    got = parse(platform, body)
    assert isinstance(got, AssignmentEvent)
    assert got.due_date == due


@pytest.mark.parametrize("platform", ["exec", "limeplate"])
def test_a_due_date_naming_a_day_that_does_not_exist_is_refused_with_its_path(platform: str) -> None:
    """``2026-02-30`` is a 422 naming the deadline's path, not a deadline moved to another day."""
    if platform == "exec":
        assignment = {**exec_assignment("ea-1", "jane@acme.example"), "due_date": "2026-02-30"}
        body = exec_event("assignment.created", assignment)
        path = "data.due_date"
    else:
        body = limeplate_completed({**limeplate_assignment("lp-1"), "deadline": "2026-02-30"}, "jane@acme.example")
        path = "data.assignment.deadline"
    with pytest.raises(UnusableBody) as refused:
        parse(platform, body)
    assert refused.value.path == path


# --- arbitrary input --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
types = st.sampled_from(["assignment.created", "assignment.completed", "assignment.updated", ""]) | st.text(max_size=8)


def _envelopes(platform: str) -> st.SearchStrategy[dict[str, Any]]:
    """Envelopes mixing valid parts of real bodies with arbitrary JSON at every level."""
    if platform == "exec":
        real = exec_assignment("ea-1", "jo@acme.example", status="completed")
    else:
        real = {"assignment": limeplate_assignment("asg-1"), "user": {"email": "jo@acme.example"}}
    data = st.one_of(
        st.just(real),
        st.builds(lambda extra: {**real, **extra}, st.dictionaries(st.sampled_from(sorted(real)), json_values)),
        json_values,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=300) | json_values,
            "type": types | json_values,
            "timestamp": st.sampled_from(["2026-05-29T08:00:00Z", "2026-05-29T08:00:00", "nope"]) | json_values,
            "data": data,
        },
    )


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
@settings(max_examples=300, deadline=None)
@given(data=st.data(), message_id=st.none() | st.text(min_size=1, max_size=40))
def test_any_json_body_is_parsed_or_refused_cleanly(platform: str, data: st.DataObject, message_id: str | None) -> None:
    """Whatever the JSON, ``parse_event`` returns an event or ``Ignored``, or refuses 400/422; nothing else."""
    body: Any = data.draw(_envelopes(platform) | json_values)
    outcome = _outcome(platform, body, message_id)
    if isinstance(outcome, RejectRequest):
        assert (outcome.status, outcome.code) in {(400, "malformed_json"), (422, "invalid_body")}
    else:
        assert outcome.message_id == (message_id or body["id"])


def _outcome(platform: str, body: Any, message_id: str | None) -> AssignmentEvent | Ignored | RejectRequest:
    """What ``parse_event`` returned, or the refusal it raised (any other exception propagates)."""
    try:
        return parse(platform, body, message_id=message_id)
    except RejectRequest as exc:
        return exc


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300))
def test_any_bytes_are_parsed_or_refused_cleanly(body: bytes) -> None:
    """Arbitrary bytes never escape as anything but ``MalformedRequest`` or ``UnusableBody``."""
    outcome = _outcome("limeplate", body, "m")
    assert not isinstance(outcome, RejectRequest) or isinstance(outcome, MalformedRequest | UnusableBody)
