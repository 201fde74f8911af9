"""The request validator can fail: it reports what StackOne's spec does not define, and passes what it does."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lmsbridge.testing.openapi import SpecValidator
from lmsbridge.testing.stackone import StackOneStandIn
from tests.stackone.conftest import ACCOUNT, KEY

HEADERS = {
    "x-account-id": ACCOUNT,
    "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
    "Content-Type": "application/json",
}
ASSIGNMENTS = "/unified/lms/users/usr_1/assignments"


@pytest.fixture(scope="module")
def validator(spec_path: Path) -> SpecValidator:
    """One validator for StackOne's spec (compiling it once is the point)."""
    return SpecValidator(spec_path)


async def test_an_unknown_body_field_sent_over_http_is_a_violation(
    standin: StackOneStandIn, session: aiohttp.ClientSession
) -> None:
    """A raw request with a field the spec does not define is answered but reported as a violation."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    body = {"learning_object_external_reference": "lo-1", "priority": "high"}
    async with session.post(
        f"{standin.url}/unified/lms/users/{uid}/assignments", json=body, headers=HEADERS
    ) as response:
        assert response.status == 201
    assert standin.violations == [f"POST /unified/lms/users/{uid}/assignments: body.priority: not defined by the spec"]


def test_a_valid_assignment_body_passes(validator: SpecValidator) -> None:
    """Every field lmsbridge sends for an assignment, with nullable ones null, is valid."""
    body = {
        "learning_object_external_reference": "lo-1",
        "status": {"value": "in_progress"},
        "progress": 40,
        "assigned_at": "2026-05-29T08:00:00.000Z",
        "due_date": None,
    }
    assert validator.check("POST", ASSIGNMENTS, {}, HEADERS, body) == []


def test_unknown_fields_are_found_inside_allof_and_arrays(validator: SpecValidator) -> None:
    """Unknown keys are reported at any depth: in a $ref'd allOf object and in array items."""
    assignment = {"learning_object_external_reference": "lo", "status": {"value": "pending", "colour": "red"}}
    assert validator.check("POST", ASSIGNMENTS, {}, HEADERS, assignment) == [
        "body.status.colour: not defined by the spec"
    ]
    batch = {"items": [{"external_reference": "a"}, {"external_reference": "b", "owner": "me"}]}
    assert validator.check("POST", "/unified/lms/content/batch", {}, HEADERS, batch) == [
        "body.items[1].owner: not defined by the spec"
    ]


def test_free_form_objects_accept_any_key(validator: SpecValidator) -> None:
    """passthrough and unified_custom_fields declare additionalProperties, so any key is fine there."""
    body = {"learning_object_external_reference": "lo", "passthrough": {"anything": {"deep": 1}}}
    assert validator.check("POST", ASSIGNMENTS, {}, HEADERS, body) == []
    item = {"external_reference": "a", "unified_custom_fields": {"x": 1}}
    assert validator.check("PUT", "/unified/lms/content", {}, HEADERS, item) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "body: 'learning_object_external_reference' is a required property"),
        ({"learning_object_external_reference": 5}, "body.learning_object_external_reference: 5 is not of type"),
        ({"learning_object_external_reference": "lo", "status": {"value": "done"}}, "body.status.value: 'done'"),
        ({"learning_object_external_reference": "lo", "assigned_at": "29/05/2026"}, "is not a 'date-time'"),
        ({"learning_object_external_reference": "lo", "progress": "40"}, "body.progress: '40' is not of type"),
    ],
)
def test_schema_violations_are_reported(validator: SpecValidator, body: dict[str, Any], expected: str) -> None:
    """Missing required fields, wrong types, values outside an enum and malformed date-times are reported."""
    problems = validator.check("POST", ASSIGNMENTS, {}, HEADERS, body)
    assert len(problems) == 1
    assert problems[0].startswith(expected) or expected in problems[0]


def test_completion_result_must_be_capitalised(validator: SpecValidator) -> None:
    """result.value is Pass or Fail; 'pass' is off the spec."""
    body = {"learning_object_external_reference": "lo", "result": {"value": "pass"}}
    [problem] = validator.check("POST", "/unified/lms/users/u/completions", {}, HEADERS, body)
    assert problem.startswith("body.result.value: 'pass'")


def test_query_parameters_are_checked(validator: SpecValidator) -> None:
    """Known deepObject keys pass; unknown parameters and unknown filter keys are reported."""
    ok = {"filter[email]": "a@b.example", "filter[updated_after]": "2026-01-01T00:00:00.000Z", "page_size": "25"}
    assert validator.check("GET", "/unified/lms/users", ok, HEADERS, None) == []
    assert validator.check("GET", "/unified/lms/users", {"next": "abc", "proxy[x]": "1"}, HEADERS, None) == []
    bad = {"filter[mail]": "a@b.example", "limit": "10", "filter[updated_after]": "yesterday", "filter": "x"}
    assert validator.check("GET", "/unified/lms/users", bad, HEADERS, None) == [
        "query filter[mail]: mail is not a property of filter",
        "query limit: parameter not defined by the spec",
        "query filter[updated_after]: 'yesterday' is not an RFC 3339 date-time",
        "query filter: an object parameter must be sent as filter[property]",
    ]


def test_headers_body_and_operation_are_required(validator: SpecValidator) -> None:
    """No x-account-id, no Basic auth, no body where one is required, or no such operation: all reported."""
    assert validator.check("POST", ASSIGNMENTS, {}, {}, None) == [
        "header x-account-id: required",
        "header Authorization: HTTP Basic auth required",
        "body: required",
    ]
    assert validator.check("GET", "/unified/lms/users", {}, HEADERS, {"a": 1}) == ["body: this operation takes no body"]
    assert validator.check("PATCH", "/unified/lms/users", {}, HEADERS, None) == [
        "PATCH /unified/lms/users: method not defined by the spec (defined: GET)"
    ]
    assert validator.check("GET", "/unified/hris/employees", {}, HEADERS, None) == [
        "GET /unified/hris/employees: no such path in the spec"
    ]


def test_literal_paths_win_over_templates(validator: SpecValidator) -> None:
    """POST /content/batch is the batch operation, not /content/{id}; its body is checked as such."""
    assert validator.check("POST", "/unified/lms/content/batch", {}, HEADERS, {"items": []}) == []
    assert validator.check("POST", "/unified/lms/content/batch", {}, HEADERS, {"item": []}) == [
        "body: 'items' is a required property",
        "body.item: not defined by the spec",
    ]
