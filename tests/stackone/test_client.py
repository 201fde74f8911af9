"""The StackOne client against the real stand-in: every call, paging, headers, and what reaches the wire."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lmsbridge.domain.records import Rank, RecordState
from lmsbridge.domain.sync import assignment_body, completion_body, content_body
from lmsbridge.errors import RetryLater
from lmsbridge.lanes import in_background, lane
from lmsbridge.stackone import LmsUser, RateLimiter, StackOneClient
from lmsbridge.stackone.client import EMPTY_PAGES_IN_A_ROW
from lmsbridge.testing.stackone import StackOneStandIn
from tests.stackone.conftest import ACCOUNT, KEY, USER_AGENT, ClientFactory

T0 = datetime(2026, 5, 29, 8, tzinfo=UTC)
REF = "exec:scenario:discovery-call"


def _state(rank: Rank = Rank.ASSIGNED, **changes: object) -> RecordState:
    values: dict[str, object] = {
        "rank": rank,
        "learning_object_ref": REF,
        "title": "Discovery Call",
        "email": "jane@acme.example",
        "assigned_at": T0,
        "due_date": T0 + timedelta(days=14),
        "progress": 0.0,
    }
    values.update(changes)
    return RecordState(**values)  # type: ignore[arg-type]


async def test_upsert_content_batch_posts_items_and_returns_per_item_errors(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """The batch upsert sends {"items": [...]}, gets 202, and returns one error list per item."""
    items = [content_body(REF, "Discovery Call"), content_body("exec:scenario:renewal", "Renewal")]
    errors = await client.upsert_content_batch(ACCOUNT, items)
    assert errors == [[], []]
    assert standin.content(ACCOUNT)[REF] == {"external_reference": REF, "title": "Discovery Call", "active": True}
    [request] = standin.requests
    assert (request.method, request.path, request.status) == ("POST", "/unified/lms/content/batch", 202)
    assert request.json == {"items": items}
    assert standin.writes() == 1
    assert standin.violations == []


async def test_upsert_content_batch_reports_the_items_stackone_rejected(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """An item StackOne rejects comes back as a non-empty error list at its position; the others are stored."""
    errors = await client.upsert_content_batch(ACCOUNT, [content_body(REF, "Discovery Call"), content_body("", "X")])
    assert errors == [[], ["Missing field: external_reference"]]
    assert list(standin.content(ACCOUNT)) == [REF]
    assert standin.violations == []


async def test_create_assignment_sends_the_domain_body_and_returns_the_id(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """The assignment body built by the domain is accepted by the spec, and data.id comes back."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example", "Jane Smith")
    body = assignment_body(_state())
    lms_id = await client.create_assignment(ACCOUNT, uid, body)
    [created] = standin.assignments(ACCOUNT)
    assert lms_id == created["id"]
    assert created["user_id"] == uid
    assert created["body"] == body
    assert standin.requests[0].path == f"/unified/lms/users/{uid}/assignments"
    assert standin.violations == []


async def test_create_completion_sends_the_domain_body_and_returns_the_id(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """The completion body (result Pass/Fail, score) is accepted by the spec, and data.id comes back."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    state = _state(Rank.COMPLETED, completed_at=T0 + timedelta(days=2), passed=False, score=41.5)
    lms_id = await client.create_completion(ACCOUNT, uid, completion_body(state))
    [created] = standin.completions(ACCOUNT)
    assert lms_id == created["id"]
    assert created["body"]["result"] == {"value": "Fail"}
    assert created["body"]["score"] == {"percentage": 41.5}
    assert standin.violations == []


async def test_list_user_assignments_follows_the_cursor_to_the_end(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """Seven assignments at page_size 3 are read in three pages, every row once."""
    client = make_client(page_size=3)
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    other = standin.add_user(ACCOUNT, "omar@acme.example")
    refs = [f"lo-{i}" for i in range(7)]
    for ref in refs:
        await client.create_assignment(ACCOUNT, uid, {"learning_object_external_reference": ref})
    await client.create_assignment(ACCOUNT, other, {"learning_object_external_reference": "not-janes"})
    rows = await client.list_user_assignments(ACCOUNT, uid)
    assert [r["learning_object_external_reference"] for r in rows] == refs
    assert all(r["user_id"] == uid and r["id"] for r in rows)
    listing = [r for r in standin.requests if r.method == "GET"]
    assert len(listing) == 3
    assert "next" not in listing[0].query
    assert listing[1].query["next"]
    assert listing[2].query["next"]
    assert standin.violations == []


async def test_list_user_completions_returns_every_page(make_client: ClientFactory, standin: StackOneStandIn) -> None:
    """Completions are listed across pages, with the fields they were created with."""
    client = make_client(page_size=2)
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    for i in range(5):
        await client.create_completion(
            ACCOUNT, uid, {"learning_object_external_reference": f"lo-{i}", "result": {"value": "Pass"}}
        )
    rows = await client.list_user_completions(ACCOUNT, uid)
    assert [(r["learning_object_external_reference"], r["result"]) for r in rows] == [
        (f"lo-{i}", {"value": "Pass"}) for i in range(5)
    ]
    assert sum(r.method == "GET" for r in standin.requests) == 3
    assert standin.violations == []


async def test_find_users_by_email_sends_the_filter_and_returns_the_match(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """filter[email] is sent deepObject-style; an LMS that honours it returns just that user."""
    standin.add_user(ACCOUNT, "omar@acme.example")
    uid = standin.add_user(ACCOUNT, "Jane.Smith@acme.example", "Jane Smith")
    rows = await client.find_users_by_email(ACCOUNT, "jane.smith@acme.example")
    assert rows == [LmsUser.model_validate(rows[0].model_dump())]
    assert (rows[0].id, rows[0].email, rows[0].name) == (uid, "Jane.Smith@acme.example", "Jane Smith")
    assert rows[0].updated_at is not None
    assert rows[0].updated_at.tzinfo is not None
    assert standin.requests[0].query["filter[email]"] == "jane.smith@acme.example"
    assert standin.violations == []


async def test_find_users_by_email_returns_other_peoples_rows_when_the_lms_ignores_the_filter(
    make_client: ClientFactory, spec_path: Path
) -> None:
    """With the filter ignored, the rows come back as received, other people included (the caller checks)."""
    server = StackOneStandIn(api_key=KEY, spec_path=spec_path, honour_email_filter=False)
    await server.start()
    try:
        client = make_client(base_url=server.url)
        server.add_user(ACCOUNT, "omar@acme.example")
        server.add_user(ACCOUNT, "jane@acme.example")
        rows = await client.find_users_by_email(ACCOUNT, "jane@acme.example")
        assert [r.email for r in rows] == ["omar@acme.example", "jane@acme.example"]
        assert server.violations == []
    finally:
        await server.close()


async def test_iter_users_reads_60_users_in_3_pages_of_25(make_client: ClientFactory, standin: StackOneStandIn) -> None:
    """Sixty users at page_size 25 come in pages of 25, 25 and 10, following next until it is null."""
    client = make_client(page_size=25)
    ids = [standin.add_user(ACCOUNT, f"user{i}@acme.example") for i in range(60)]
    standin.add_user("acc-other", "stranger@other.example")
    pages = [page async for page in client.iter_users(ACCOUNT)]
    assert [len(p) for p in pages] == [25, 25, 10]
    assert [u.id for p in pages for u in p] == ids
    assert [r.query.get("page_size") for r in standin.requests] == ["25", "25", "25"]
    assert standin.violations == []


async def test_iter_users_asks_only_for_users_updated_after_a_time(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """updated_after becomes filter[updated_after] (RFC 3339, UTC) and only newer users come back."""
    standin.add_user(ACCOUNT, "old@acme.example", updated_at=T0)
    new = standin.add_user(ACCOUNT, "new@acme.example", updated_at=T0 + timedelta(hours=2))
    pages = [page async for page in client.iter_users(ACCOUNT, updated_after=T0 + timedelta(hours=1))]
    assert [u.id for p in pages for u in p] == [new]
    assert standin.requests[0].query["filter[updated_after]"] == "2026-05-29T09:00:00.000Z"
    assert standin.violations == []


async def test_probe_is_one_cheap_request(client: StackOneClient, standin: StackOneStandIn) -> None:
    """probe lists one user of the account and returns nothing when the account works."""
    standin.add_user(ACCOUNT, "jane@acme.example")
    await client.probe(ACCOUNT)
    [request] = standin.requests
    assert (request.method, request.path, request.query, request.status) == (
        "GET",
        "/unified/lms/users",
        {"page_size": "1"},
        200,
    )
    assert standin.violations == []


async def test_every_request_carries_basic_auth_account_user_agent_and_accept(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """Authorization is Basic base64("key:"), with x-account-id, the User-Agent and Accept: application/json."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    await client.upsert_content_batch(ACCOUNT, [content_body(REF, "Discovery Call")])
    await client.create_assignment(ACCOUNT, uid, assignment_body(_state()))
    await client.list_user_assignments(ACCOUNT, uid)
    await client.find_users_by_email(ACCOUNT, "jane@acme.example")
    await client.probe("acc-second")
    expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    assert len(standin.requests) == 5
    for request in standin.requests:
        assert request.headers["Authorization"] == expected
        assert request.headers["User-Agent"] == USER_AGENT
        assert request.headers["Accept"] == "application/json"
    assert [r.account for r in standin.requests] == [ACCOUNT] * 4 + ["acc-second"]
    assert standin.violations == []


async def test_the_observer_sees_operation_status_and_latency(
    make_client: ClientFactory, standin: StackOneStandIn, refused_url: str
) -> None:
    """on_response gets (operation, status, seconds) per request, and status 0 when nothing answered."""
    seen: list[tuple[str, int, float]] = []
    client = make_client(on_response=lambda op, status, seconds: seen.append((op, status, seconds)))
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    await client.create_assignment(ACCOUNT, uid, {"learning_object_external_reference": REF})
    await client.probe(ACCOUNT)
    dead = make_client(base_url=refused_url, on_response=lambda op, status, seconds: seen.append((op, status, seconds)))
    with pytest.raises(RetryLater):
        await dead.probe(ACCOUNT)
    assert [(op, status) for op, status, _ in seen] == [("create_assignment", 201), ("probe", 200), ("probe", 0)]
    assert all(0 <= seconds < 5 for _, _, seconds in seen)


async def test_the_budget_observer_sees_each_requests_wait_in_its_lane(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """on_budget_wait gets the seconds each request waited for the rate budget, in the waiting task's lane:
    at 600 a minute (one request every 0.1 s, no burst) the first of two waits nothing, the second about 0.1 s."""
    seen: list[tuple[bool, float]] = []
    limiter = RateLimiter(600, burst=1)
    client = make_client(limiter=limiter, on_budget_wait=lambda seconds: seen.append((in_background(), seconds)))
    await client.probe(ACCOUNT)
    with lane(True):
        await client.probe(ACCOUNT)
    [(first_background, first), (second_background, second)] = seen
    assert (first_background, second_background) == (False, True)
    assert first < 0.02
    assert 0.05 < second < 0.5


async def test_a_listing_whose_cursor_comes_back_stops_with_a_retry(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """A provider naming the same ``next`` cursor again ends the listing with a retryable error, not a loop."""
    client = make_client()
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(200, times=50, path_contains="/assignments", body={"data": [], "next": "page-2"})
    with pytest.raises(RetryLater, match="cursor repeated"):
        await client.list_user_assignments(ACCOUNT, uid)
    assert sum(r.method == "GET" for r in standin.requests) == 2


async def test_a_listing_of_endless_empty_pages_stops_with_a_retry(make_client: ClientFactory) -> None:
    """Empty pages each naming a new ``next`` cursor end the listing after a bounded run, not never."""
    calls = 0

    async def endless(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"data": [], "next": f"cursor-{calls}"})

    app = web.Application()
    app.router.add_get("/unified/lms/users/{id}/assignments", endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = make_client(base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(RetryLater, match=f"{EMPTY_PAGES_IN_A_ROW} empty pages in a row"):
            await client.list_user_assignments(ACCOUNT, "user-1")
    finally:
        await runner.cleanup()
    assert calls == EMPTY_PAGES_IN_A_ROW


async def test_a_few_empty_pages_before_rows_are_followed(make_client: ClientFactory) -> None:
    """Short (even empty) pages that name a next page are followed: the rows after them are read."""
    pages = [{"data": [], "next": "b"}, {"data": [], "next": "c"}, {"data": [{"id": "a-1"}], "next": None}]
    served: list[str | None] = []

    async def paged(request: web.Request) -> web.Response:
        served.append(request.query.get("next"))
        return web.json_response(pages[len(served) - 1])

    app = web.Application()
    app.router.add_get("/unified/lms/users/{id}/assignments", paged)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        client = make_client(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        rows = await client.list_user_assignments(ACCOUNT, "user-1")
    finally:
        await runner.cleanup()
    assert rows == [{"id": "a-1"}]
    assert served == [None, "b", "c"]


async def serve_pages(page: Callable[[int, str | None], dict[str, Any]]) -> tuple[web.AppRunner, list[str | None]]:
    """A real server answering users' assignment listings with ``page(call number, next asked)``."""
    asked: list[str | None] = []

    async def listing(request: web.Request) -> web.Response:
        asked.append(request.query.get("next"))
        return web.json_response(page(len(asked), asked[-1]))

    app = web.Application()
    app.router.add_get("/unified/lms/users/{id}/assignments", listing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, asked


async def test_a_listing_that_cycles_through_the_same_rows_stops_with_a_retry(make_client: ClientFactory) -> None:
    """Pages of rows all read before, each with a new cursor (a provider going round in circles), end
    the listing at the first such page, instead of reading the same rows for ever."""
    runner, asked = await serve_pages(lambda n, _: {"data": [{"id": "a-1"}, {"id": "a-2"}], "next": f"c{n}"})
    try:
        client = make_client(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        with pytest.raises(RetryLater, match="every row of a page came on an earlier one"):
            await client.list_user_assignments(ACCOUNT, "user-1")
    finally:
        await runner.cleanup()
    assert asked == [None, "c1"]


async def test_pages_sharing_a_row_are_all_read(make_client: ClientFactory) -> None:
    """A page repeating one row of the page before (offsets shifting under a provider) among new
    ones is read on: only a page of nothing but repeats stops a listing."""
    pages: list[dict[str, Any]] = [
        {"data": [{"id": "a-1"}, {"id": "a-2"}], "next": "b"},
        {"data": [{"id": "a-2"}, {"id": "a-3"}], "next": "c"},
        {"data": [{"id": "a-4"}], "next": None},
    ]
    runner, asked = await serve_pages(lambda n, _: pages[n - 1])
    try:
        client = make_client(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        rows = await client.list_user_assignments(ACCOUNT, "user-1")
    finally:
        await runner.cleanup()
    assert [r["id"] for r in rows] == ["a-1", "a-2", "a-2", "a-3", "a-4"]
    assert asked == [None, "b", "c"]
