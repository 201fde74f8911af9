"""What the database cannot hold is refused at intake: 422 naming the body field, never a 202 (issue 13).

Each case is a body that passed validation before and then looped in the worker, because
PostgreSQL refused it: NUL (and other control characters) in titles and ids, a learning-object
reference longer than its column, an e-mail that grows past 320 characters when lower-cased,
a datetime that overflows when converted to UTC. Also: a number too large for a double (valid
JSON, so 422 rather than 400), and ids taken from the body get the header ids' printable check.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import String

from lmsbridge.domain import AssignmentEvent, LearningObject, PersonProgress
from lmsbridge.domain.events import MAX_EMAIL, MAX_ID, MAX_REFERENCE
from lmsbridge.errors import MalformedRequest, UnusableBody
from lmsbridge.storage import tables
from lmsbridge.testing.webhooks import (
    exec_assignment,
    exec_event,
    limeplate_assignment,
    limeplate_completed,
)
from lmsbridge.vendors import parse_event

RECEIVED = datetime(2026, 5, 29, 9, 30, tzinfo=UTC)
EMAIL = "jane.doe@acme.example"
# 'İ' (U+0130) lower-cases to two characters, so 300 of them become 600.
GROWING_EMAIL = "\u0130" * 300 + "@acme.example"


def refused(platform: str, body: dict[str, Any] | bytes, *, message_id: str | None = "m-1") -> UnusableBody:
    """The 422 refusal ``parse_event`` gives ``body``."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(UnusableBody) as info:
        parse_event(platform, raw, source="acme", message_id=message_id, received_at=RECEIVED, correlation_id="c")
    assert (info.value.status, info.value.code) == (422, "invalid_body")
    return info.value


def lime_completed(**assignment: Any) -> dict[str, Any]:
    """A limeplate completion whose assignment has ``assignment``'s fields changed."""
    return limeplate_completed({**limeplate_assignment("asg-1"), **assignment}, EMAIL, event_id="evt_1")


def exec_created(**changes: Any) -> dict[str, Any]:
    """An Exec ``assignment.created`` with top-level ``changes``."""
    return exec_event("assignment.created", {**exec_assignment("a-1", EMAIL), **changes}, event_id="evt_e1")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (lime_completed(targetTitle="SQL\x00Injection"), "data.assignment.targetTitle"),
        (lime_completed(id="asg\x00-1"), "data.assignment.id"),
        (lime_completed(targetId="sql\x00injection"), "data.assignment.targetId"),
        (lime_completed(targetType="to\x1bpic"), "data.assignment.targetType"),
    ],
)
def test_nul_and_control_characters_in_limeplate_titles_and_ids_are_422(body: dict[str, Any], path: str) -> None:
    """A NUL (PostgreSQL cannot store it) or an escape character in a title or an id: 422 at its field."""
    assert refused("limeplate", body).path == path


def test_nul_in_a_completion_members_name_and_email_is_422() -> None:
    """The person's name and e-mail are checked too (the e-mail becomes the stored person key)."""
    body = lime_completed()
    body["data"]["user"]["name"] = "Jane\x00Doe"
    assert refused("limeplate", body).path == "data.user.name"
    body = lime_completed()
    body["data"]["user"]["email"] = "jane\x00@acme.example"
    assert refused("limeplate", body).path == "data.user.email"


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"id": "a\x00"}, "data.id"),
        ({"scenario": {"id": "s1", "name": "Discovery\x00Call", "slug": "discovery"}}, "data.scenario.name"),
        ({"scenario": {"id": "s1", "name": "Discovery", "slug": "disc\x00overy"}}, "data.scenario.slug"),
    ],
)
def test_nul_in_exec_titles_and_ids_is_422(changes: dict[str, Any], path: str) -> None:
    """Exec's assignment id, scenario title and slug: a NUL is 422 at its field."""
    assert refused("exec", exec_created(**changes)).path == path


def test_a_learning_object_reference_longer_than_its_column_is_422_at_the_target_id() -> None:
    """``limeplate:{targetType}:{targetId}`` must fit the 512-character column: 422 naming ``targetId``."""
    fits = "x" * (MAX_REFERENCE - len("limeplate:topic:"))
    event = parse_event(
        "limeplate",
        orjson.dumps(lime_completed(targetId=fits)),
        source="acme",
        message_id="m-1",
        received_at=RECEIVED,
        correlation_id="c",
    )
    assert isinstance(event, AssignmentEvent)
    assert len(event.learning_object.external_reference) == MAX_REFERENCE
    assert refused("limeplate", lime_completed(targetId=fits + "x")).path == "data.assignment.targetId"


def test_an_exec_reference_longer_than_its_column_is_422_at_the_slug() -> None:
    """``exec:scenario:{slug}`` likewise: 422 naming ``data.scenario.slug``."""
    slug = "s" * MAX_REFERENCE
    body = exec_created(scenario={"id": "s1", "name": "Discovery", "slug": slug})
    assert refused("exec", body).path == "data.scenario.slug"


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_an_email_that_grows_past_320_when_lower_cased_is_422(platform: str) -> None:
    """U+0130 lower-cases to two characters: a 313-character e-mail becomes a 613-character person key."""
    assert len(GROWING_EMAIL) <= MAX_EMAIL < len(GROWING_EMAIL.lower())
    if platform == "limeplate":
        body = lime_completed()
        body["data"]["user"]["email"] = GROWING_EMAIL
        path = "data.user.email"
    else:
        body = exec_event("assignment.created", exec_assignment("a-1", EMAIL), event_id="e")
        body["data"]["user"]["email"] = GROWING_EMAIL
        path = "data.user.email"
    assert refused(platform, body).path == path


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deadline", "9999-12-31T23:59:59-12:00"),
        ("createdAt", "0001-01-01T00:00:00+14:00"),
    ],
)
def test_a_datetime_that_overflows_in_utc_is_422(field: str, value: str) -> None:
    """A date the database cannot store once normalised to UTC (year 10000, year 0): 422 at its field."""
    assert refused("limeplate", lime_completed(**{field: value})).path == f"data.assignment.{field}"


def test_an_envelope_timestamp_that_overflows_in_utc_is_422() -> None:
    """The envelope's own ``timestamp`` (the event's occurred_at) is checked the same way."""
    body = exec_created()
    body["timestamp"] = "9999-12-31T23:59:59-12:00"
    assert refused("exec", body).path == "timestamp"


def test_the_largest_storable_datetimes_are_accepted() -> None:
    """The edge itself is fine: 9999-12-31T23:59:59Z and a -12:00 date a day earlier."""
    body = lime_completed(deadline="9999-12-31T23:59:59Z", createdAt="9999-12-30T23:59:59-12:00")
    event = parse_event(
        "limeplate", orjson.dumps(body), source="acme", message_id="m", received_at=RECEIVED, correlation_id="c"
    )
    assert isinstance(event, AssignmentEvent)


@pytest.mark.parametrize("number", [b"1e309", b"-1e309", b"1" + b"0" * 400, b"1e99999"])
def test_a_number_too_large_for_a_double_is_422_naming_the_field(number: bytes) -> None:
    """Valid JSON whose number overflows a double: 422 at the field (not 400 ``malformed_json``)."""
    body = orjson.dumps(exec_created(best_score=1.0)).replace(b'"best_score":1.0', b'"best_score":' + number)
    assert refused("exec", body).path == "data.best_score"


def test_an_overflowing_number_in_a_list_names_its_index() -> None:
    """The path names list positions, as every other 422 does."""
    body = b'{"id":"e","type":"assignment.created","data":{"x":[1,2,1e400]}}'
    assert refused("exec", body).path == "data.x[2]"


def test_malformed_json_with_a_huge_number_stays_400() -> None:
    """A body that is not JSON at all stays 400 ``malformed_json`` even when it holds a huge number."""
    for body in (b'{"a":1e309', b'{"a":1e309,}', b'{"a":NaN}', b"[" * 5000 + b"1e309" + b"]" * 5000):
        with pytest.raises(MalformedRequest):
            parse_event("exec", body, source="acme", message_id="m", received_at=RECEIVED, correlation_id="c")


@pytest.mark.parametrize("bad_id", ["evt\x00x", "evt\nx", "evt\u2028x", "evt\x7f"])
@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_a_body_id_gets_the_header_ids_printable_check(platform: str, bad_id: str) -> None:
    """Schemes without a header id (Stripe style, GitHub without a delivery header) take the body's ``id``:
    unprintable characters there are 422 at ``id``, as they are 400 in a ``webhook-id`` header."""
    body = lime_completed() if platform == "limeplate" else exec_created()
    body["id"] = bad_id
    assert refused(platform, body, message_id=None).path == "id"


def test_the_domain_refuses_what_the_database_cannot_hold() -> None:
    """The limits live in the pure domain, so the worker decoding a queued event applies them too."""
    person = {"email": EMAIL}
    lo = {"external_reference": "limeplate:topic:x", "title": "T"}
    base: dict[str, Any] = {
        "message_id": "m",
        "source": "acme",
        "platform": "limeplate",
        "type": "assignment.created",
        "occurred_at": RECEIVED,
        "received_at": RECEIVED,
        "correlation_id": "c",
        "assignment_id": "a",
        "learning_object": lo,
        "people": [person],
    }
    AssignmentEvent.model_validate(base)
    for bad in (
        {"assignment_id": "a\x00"},
        {"message_id": "m\x00"},
        {"learning_object": {**lo, "title": "T\x00"}},
        {"learning_object": {**lo, "external_reference": "r" * (MAX_REFERENCE + 1)}},
        {"people": [{"email": GROWING_EMAIL}]},
        {"due_date": "9999-12-31T23:59:59-12:00"},
    ):
        with pytest.raises(ValidationError):
            AssignmentEvent.model_validate({**base, **bad})
    with pytest.raises(ValidationError):
        LearningObject(external_reference="r", title="a\x00")
    with pytest.raises(ValidationError):
        PersonProgress(email="a@b\x00")


def test_the_limits_are_the_columns_lengths() -> None:
    """The domain's limits are the widths of the columns the values are stored in (no drift)."""

    def width(column: Any) -> int | None:
        assert isinstance(column.type, String)
        return column.type.length

    assert MAX_ID == width(tables.inbox.c.message_id) == width(tables.records.c.assignment_id)
    assert MAX_REFERENCE == width(tables.records.c.learning_object_ref) == width(tables.content.c.external_reference)
    assert MAX_EMAIL == width(tables.records.c.person_key) == width(tables.directory.c.email)
