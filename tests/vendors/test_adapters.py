"""Body adapters: ``parse_event`` turns each platform's envelope into the canonical event, or refuses it.

Bodies come from :mod:`lmsbridge.testing.webhooks`, which follows the contract in
``shared/specs/webhooks.md``; each refusal is checked for its status, code and JSON path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedRequest, UnusableBody
from lmsbridge.testing.webhooks import (
    T0,
    exec_assignment,
    exec_event,
    limeplate_assignment,
    limeplate_completed,
    limeplate_created,
)
from lmsbridge.vendors import Ignored, parse_event

RECEIVED = datetime(2026, 5, 29, 9, 30, tzinfo=UTC)
EMAIL = "jane.doe@acme.example"

Envelope = dict[str, Any]


def parse(platform: str, body: Envelope | bytes, *, message_id: str | None = None) -> AssignmentEvent | Ignored:
    """``parse_event`` as the receiver calls it, after the signature verified."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_event(
        platform, raw, source="acme", message_id=message_id, received_at=RECEIVED, correlation_id="corr-1"
    )


def event(platform: str, body: Envelope | bytes, *, message_id: str | None = None) -> AssignmentEvent:
    """The canonical event for a handled body."""
    parsed = parse(platform, body, message_id=message_id)
    assert isinstance(parsed, AssignmentEvent)
    return parsed


def unusable(platform: str, body: Envelope | bytes, *, message_id: str | None = None) -> UnusableBody:
    """The 422 refusal of a body that lacks what lmsbridge needs."""
    with pytest.raises(UnusableBody) as info:
        parse(platform, body, message_id=message_id)
    assert (info.value.status, info.value.code) == (422, "invalid_body")
    return info.value


def aware(value: datetime | None) -> datetime:
    """``value``, asserted to be a timezone-aware datetime."""
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() is not None
    return value


def lime_created() -> Envelope:
    return limeplate_created(limeplate_assignment("asg-1"), event_id="evt_lc")


def lime_completed() -> Envelope:
    return limeplate_completed(
        limeplate_assignment("asg-1"), EMAIL, name="Jane Doe", completed_at=T0 + timedelta(days=3), event_id="evt_lx"
    )


def exec_created() -> Envelope:
    return exec_event("assignment.created", exec_assignment("ea-1", EMAIL), event_id="evt_ec")


def exec_completed(status: str = "completed", score: float | None = 92.0) -> Envelope:
    assignment = exec_assignment("ea-1", EMAIL, status=status, best_score=score)
    return exec_event("assignment.completed", assignment, at=T0 + timedelta(days=2), event_id="evt_ex")


# --- canonical fields -----------------------------------------------------------------------


def test_limeplate_created_needs_expansion_and_names_the_topic() -> None:
    """limeplate ``assignment.created``: topic reference and title, tz-aware dates, no people, needs expansion."""
    got = event("limeplate", lime_created())
    assert (got.type, got.platform, got.source, got.message_id) == ("assignment.created", "limeplate", "acme", "evt_lc")
    assert got.assignment_id == "asg-1"
    assert (got.learning_object.external_reference, got.learning_object.title) == (
        "limeplate:topic:sql-injection",
        "SQL Injection",
    )
    assert aware(got.assigned_at) == T0
    assert aware(got.due_date) == T0 + timedelta(days=14)
    assert aware(got.occurred_at) == T0
    assert (got.received_at, got.correlation_id) == (RECEIVED, "corr-1")
    assert got.needs_expansion is True
    assert got.people == ()


def test_limeplate_completed_carries_the_one_member_as_passed() -> None:
    """limeplate ``assignment.completed``: one person, passed, 100 %, with the platform's completion time."""
    got = event("limeplate", lime_completed())
    assert (got.type, got.needs_expansion) == ("assignment.completed", False)
    assert got.learning_object.external_reference == "limeplate:topic:sql-injection"
    assert aware(got.occurred_at) == T0 + timedelta(days=3)
    (person,) = got.people
    assert (person.email, person.name, person.passed, person.progress) == (EMAIL, "Jane Doe", True, 100)
    assert aware(person.completed_at) == T0 + timedelta(days=3)
    assert person.platform_user_id


def test_limeplate_target_other_than_topic_keeps_its_type_in_the_reference() -> None:
    """The limeplate reference is ``limeplate:<targetType>:<targetId>`` with the training's own title."""
    body = lime_created()
    body["data"]["assignment"].update(targetType="course", targetId="secure-coding-101", targetTitle="Secure Coding")
    got = event("limeplate", body)
    assert (got.learning_object.external_reference, got.learning_object.title) == (
        "limeplate:course:secure-coding-101",
        "Secure Coding",
    )


def test_exec_created_has_the_person_at_zero_progress() -> None:
    """Exec ``assignment.created``: the scenario reference and name, the person at 0 %, dates tz-aware."""
    got = event("exec", exec_created())
    assert (got.type, got.platform, got.message_id, got.assignment_id) == (
        "assignment.created",
        "exec",
        "evt_ec",
        "ea-1",
    )
    assert (got.learning_object.external_reference, got.learning_object.title) == (
        "exec:scenario:discovery-call",
        "Discovery Call",
    )
    assert aware(got.assigned_at) == T0
    assert aware(got.due_date) == T0 + timedelta(days=14)
    assert got.needs_expansion is False
    (person,) = got.people
    assert (person.email, person.name, person.progress, person.passed, person.score) == (
        EMAIL,
        "Jane Doe",
        0.0,
        None,
        None,
    )


@pytest.mark.parametrize(("status", "score", "passed"), [("completed", 92.0, True), ("did_not_pass", 41.5, False)])
def test_exec_completion_is_pass_or_fail_with_score(status: str, score: float, passed: bool) -> None:
    """Exec ``completed`` is a pass and ``did_not_pass`` a fail; ``best_score`` is the score; time from envelope."""
    got = event("exec", exec_completed(status, score))
    assert got.type == "assignment.completed"
    (person,) = got.people
    assert (person.passed, person.score, person.email) == (passed, score, EMAIL)
    assert aware(got.occurred_at) == T0 + timedelta(days=2)


def test_exec_completion_without_score_is_allowed() -> None:
    """An Exec completion with ``best_score`` null is a pass with no score."""
    (person,) = event("exec", exec_completed("completed", None)).people
    assert (person.passed, person.score) == (True, None)


def test_exec_scenario_without_slug_falls_back_to_its_id() -> None:
    """An Exec scenario with no slug is referenced by its id."""
    body = exec_created()
    body["data"]["scenario"] = {"id": "s_42", "name": "Cold Call"}
    assert event("exec", body).learning_object.external_reference == "exec:scenario:s_42"


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_naive_and_offset_dates_become_aware(platform: str) -> None:
    """Dates without a zone are taken as UTC; dates with an offset keep the instant."""
    body = lime_created() if platform == "limeplate" else exec_created()
    body["timestamp"] = "2026-05-29T08:00:00"
    if platform == "limeplate":
        body["data"]["assignment"]["deadline"] = "2026-06-12T10:00:00+02:00"
    else:
        body["data"]["due_date"] = "2026-06-12T10:00:00+02:00"
    got = event(platform, body)
    assert aware(got.occurred_at) == T0
    assert aware(got.due_date) == datetime(2026, 6, 12, 10, tzinfo=timezone(timedelta(hours=2)))
    assert got.due_date == T0 + timedelta(days=14)


def test_envelope_without_timestamp_uses_the_receipt_time() -> None:
    """With no envelope ``timestamp`` the event occurred when it was received."""
    body = exec_completed()
    del body["timestamp"]
    assert event("exec", body).occurred_at == RECEIVED


# --- ignored types, extra fields, ids ---------------------------------------------------------


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
@pytest.mark.parametrize("kind", ["assignment.updated", "assignment.deleted", "user.created", "ping"])
def test_other_event_types_are_ignored_whatever_their_data(platform: str, kind: str) -> None:
    """Types other than created/completed become ``Ignored`` with their type and id, without reading ``data``."""
    body = {"id": "evt_other", "type": kind, "timestamp": "2026-05-29T08:00:00Z", "data": {"anything": [1, 2]}}
    assert parse(platform, body) == Ignored(kind, "evt_other")
    assert parse(platform, body, message_id="msg_h") == Ignored(kind, "msg_h")


@pytest.mark.parametrize(
    ("platform", "build"),
    [("limeplate", lime_created), ("limeplate", lime_completed), ("exec", exec_created), ("exec", exec_completed)],
)
def test_unknown_extra_fields_are_accepted_everywhere(platform: str, build: Callable[[], Envelope]) -> None:
    """Platforms add fields: unknown keys at every level change nothing."""
    plain = event(platform, build())
    body = build()
    body["apiVersion"] = "2026-06-01"
    body["data"]["newThing"] = {"nested": True}
    for part in ("assignment", "user", "scenario"):
        if isinstance(body["data"].get(part), dict):
            body["data"][part]["futureField"] = ["x"]
    assert event(platform, body) == plain


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_message_id_from_the_header_wins_over_the_body_id(platform: str) -> None:
    """When the signature scheme carries a message id it is the event's id, not the body's ``id``."""
    body = lime_created() if platform == "limeplate" else exec_created()
    assert event(platform, body, message_id="msg_from_header").message_id == "msg_from_header"
    assert event(platform, body).message_id == body["id"]


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
def test_header_id_suffices_when_the_body_has_none(platform: str) -> None:
    """A body without ``id`` is fine when the scheme supplies the message id."""
    body = lime_created() if platform == "limeplate" else exec_created()
    del body["id"]
    assert event(platform, body, message_id="msg_h").message_id == "msg_h"


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
@pytest.mark.parametrize("kind", ["assignment.created", "assignment.updated"])
def test_no_id_anywhere_is_422_at_path_id(platform: str, kind: str) -> None:
    """With no message id from the scheme and none in the body, the body is refused at path ``id``."""
    body = lime_created() if platform == "limeplate" else exec_created()
    del body["id"]
    body["type"] = kind
    assert unusable(platform, body).path == "id"


# --- refusals -----------------------------------------------------------------------------------


def _without(body: Envelope, path: str) -> Envelope:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    del node[last]
    return body


def _with(body: Envelope, path: str, value: object) -> Envelope:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


MISSING = [
    ("limeplate", lime_created, "data.assignment.targetId"),
    ("limeplate", lime_created, "data.assignment.targetTitle"),
    ("limeplate", lime_created, "data.assignment.targetType"),
    ("limeplate", lime_created, "data.assignment.assigneeType"),
    ("limeplate", lime_created, "data.assignment.id"),
    ("limeplate", lime_created, "data.assignment"),
    ("limeplate", lime_completed, "data.user.email"),
    ("limeplate", lime_completed, "data.user"),
    ("limeplate", lime_completed, "data.assignment.targetId"),
    ("exec", exec_created, "data.scenario"),
    ("exec", exec_created, "data.scenario.name"),
    ("exec", exec_created, "data.user"),
    ("exec", exec_created, "data.user.email"),
    ("exec", exec_created, "data.id"),
    ("exec", exec_completed, "data.status"),
    ("exec", exec_completed, "data.user.email"),
    ("limeplate", lime_created, "type"),
    ("exec", exec_created, "type"),
]


@pytest.mark.parametrize(
    ("platform", "build", "path"), MISSING, ids=[f"{p}-{b.__name__}-{path}" for p, b, path in MISSING]
)
def test_missing_field_is_422_with_its_path(platform: str, build: Callable[[], Envelope], path: str) -> None:
    """A body lacking a field lmsbridge needs is refused with 422 and that field's JSON path."""
    exc = unusable(platform, _without(build(), path))
    assert exc.path == path
    assert path in exc.message


WRONG = [
    ("limeplate", lime_created, "data.assignment.assigneeType", "robot"),
    ("limeplate", lime_created, "data.assignment.targetId", ""),
    ("limeplate", lime_created, "data.assignment.deadline", "next tuesday"),
    ("limeplate", lime_completed, "data.user.email", "not-an-email"),
    ("limeplate", lime_completed, "data.user.progressPercent", 140),
    ("exec", exec_created, "data.user.email", "jane at acme"),
    ("exec", exec_created, "data.scenario", "discovery-call"),
    ("exec", exec_completed, "data.best_score", -1),
    ("exec", exec_completed, "data.status", "in_progress"),
    ("exec", exec_completed, "data.status", "not_started"),
    ("exec", exec_created, "data", []),
    ("exec", exec_created, "id", 42),
    ("exec", exec_created, "timestamp", "sometime"),
]


@pytest.mark.parametrize(
    ("platform", "build", "path", "value"), WRONG, ids=[f"{p}-{path}={v!r}" for p, _, path, v in WRONG]
)
def test_wrong_value_is_422_with_its_path(
    platform: str, build: Callable[[], Envelope], path: str, value: object
) -> None:
    """A field with an unusable value is refused with 422 and that field's JSON path."""
    assert unusable(platform, _with(build(), path, value)).path == path


def test_exec_completion_in_progress_is_422_at_data_status() -> None:
    """An Exec completion whose status is ``in_progress`` is neither pass nor fail: 422 at ``data.status``."""
    exc = unusable("exec", exec_completed("in_progress"))
    assert exc.path == "data.status"


def test_exec_scenario_with_neither_slug_nor_id_is_422() -> None:
    """An Exec scenario needs a slug or an id to be referenced."""
    body = exec_created()
    body["data"]["scenario"] = {"name": "Cold Call"}
    assert unusable("exec", body).path == "data.scenario.slug"


@pytest.mark.parametrize("platform", ["limeplate", "exec"])
@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b'{"id": "evt_1",', b"\xff\xfe{}", b"[]", b'[{"id": "x"}]', b'"text"', b"42", b"null", b"true"],
    ids=["empty", "broken", "truncated", "not-utf8", "array", "array-of-object", "string", "number", "null", "bool"],
)
def test_bad_json_or_non_object_is_malformed_json(platform: str, body: bytes) -> None:
    """A body that is not JSON, or not a JSON object, is refused 400 ``malformed_json``."""
    with pytest.raises(MalformedRequest) as info:
        parse(platform, body, message_id="msg_1")
    assert (info.value.status, info.value.code) == (400, "malformed_json")


def test_unknown_platform_is_a_programming_error() -> None:
    """``parse_event`` for a platform with no adapter is a bug in the caller, not a request refusal."""
    with pytest.raises(ValueError, match="unknown platform"):
        parse("moodle", exec_created())
