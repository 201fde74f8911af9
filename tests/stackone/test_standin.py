"""The StackOne stand-in itself: StackOne's rules it enforces and the misbehaviour it can script."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lmsbridge.errors import PauseAccount, RetryAfter, RetryLater, WriteUncertain
from lmsbridge.stackone import StackOneClient
from lmsbridge.testing.stackone import StackOneStandIn
from tests.stackone.conftest import ACCOUNT, KEY, ClientFactory

AUTH = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
REF = "exec:scenario:renewal"


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], **kwargs: Any
) -> tuple[int, dict[str, Any], str | None]:
    async with session.get(url, headers=headers, **kwargs) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def test_requests_without_the_stackone_essentials_are_refused_and_recorded(
    standin: StackOneStandIn, session: aiohttp.ClientSession
) -> None:
    """Wrong key -> 401, no User-Agent -> 403, no x-account-id -> 400; each is a recorded violation."""
    url = f"{standin.url}/unified/lms/users"
    good = {"Authorization": AUTH, "x-account-id": ACCOUNT, "User-Agent": "lmsbridge/test"}
    assert (await _get(session, url, good))[0] == 200
    assert standin.violations == []
    status, body, _ = await _get(session, url, {**good, "Authorization": "Basic " + base64.b64encode(b"x:").decode()})
    assert status == 401
    assert set(body) == {"statusCode", "message", "timestamp"}
    status, _, _ = await _get(
        session, url, {"Authorization": AUTH, "x-account-id": ACCOUNT}, skip_auto_headers=["User-Agent"]
    )
    assert status == 403
    status, _, _ = await _get(session, url, {"Authorization": AUTH, "User-Agent": "lmsbridge/test"})
    assert status == 400
    assert [r.status for r in standin.requests] == [200, 401, 403, 400]
    assert any("Basic credentials" in v for v in standin.violations)
    assert any("User-Agent" in v for v in standin.violations)
    assert any("x-account-id" in v for v in standin.violations)


async def test_rate_limit_answers_429_with_the_wait_until_the_window_frees(
    make_client: ClientFactory, spec_path: Path
) -> None:
    """Past N requests a minute per key the stand-in answers 429 with Retry-After and counts it."""
    server = StackOneStandIn(api_key=KEY, spec_path=spec_path, rate_limit_per_minute=3)
    await server.start()
    try:
        client = make_client(base_url=server.url)
        for account in ("acc-1", "acc-2", "acc-3"):  # per key, not per account
            await client.probe(account)
        with pytest.raises(RetryAfter) as caught:
            await client.probe("acc-4")
        assert 55 <= caught.value.delay <= 60
        assert server.rate_limited == 1
        assert [r.status for r in server.requests] == [200, 200, 200, 429]
    finally:
        await server.close()


async def test_a_408_after_the_write_leaves_the_record_written(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """write_before_failing: StackOne times out after the provider wrote; listing shows the assignment."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(408, retry_after=2, write_before_failing=True, path_contains="/assignments")
    with pytest.raises(WriteUncertain):
        await client.create_assignment(ACCOUNT, uid, {"learning_object_external_reference": REF})
    rows = await client.list_user_assignments(ACCOUNT, uid)
    assert [r["learning_object_external_reference"] for r in rows] == [REF]
    assert standin.writes() == 1
    assert standin.violations == []


async def test_scripted_failures_match_path_and_account_and_run_out(
    client: StackOneClient, standin: StackOneStandIn
) -> None:
    """fail_next applies to the next `times` matching requests only; others pass untouched."""
    standin.fail_next(503, times=2, account="acc-b", path_contains="/users")
    await client.probe("acc-a")
    for _ in range(2):
        with pytest.raises(RetryLater):
            await client.probe("acc-b")
    await client.probe("acc-b")
    assert [r.status for r in standin.requests] == [200, 503, 503, 200]


async def test_random_faults_are_reproducible_from_the_seed(make_client: ClientFactory, spec_path: Path) -> None:
    """Two stand-ins with one seed and one fault mix answer the same sequence of statuses."""
    sequences = []
    for _ in range(2):
        server = StackOneStandIn(api_key=KEY, spec_path=spec_path, seed=42)
        server.set_fault_rates(error_5xx=0.3, burst_429=0.2, retry_after=1)
        await server.start()
        try:
            client = make_client(base_url=server.url)
            for _ in range(40):
                with contextlib.suppress(RetryLater):
                    await client.probe(ACCOUNT)
            sequences.append([r.status for r in server.requests])
        finally:
            await server.close()
    assert sequences[0] == sequences[1]
    assert {200, 429} <= set(sequences[0])
    assert set(sequences[0]) - {200, 429} <= {500, 502, 503}
    assert 0 < sequences[0].count(200) < 40


async def test_disable_and_enable_an_account(client: StackOneClient, standin: StackOneStandIn) -> None:
    """A disabled account answers the chosen status (here 403) until enabled again."""
    standin.disable_account(ACCOUNT, status=403)
    with pytest.raises(PauseAccount) as caught:
        await client.probe(ACCOUNT)
    assert caught.value.status == 403
    standin.enable_account(ACCOUNT)
    await client.probe(ACCOUNT)


async def test_users_and_lists_answer_in_the_specs_shapes(
    standin: StackOneStandIn, session: aiohttp.ClientSession
) -> None:
    """GET a user, the cross-user lists and an unknown user's 404 come back shaped as the spec's schemas."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example", "Jane Smith")
    headers = {"Authorization": AUTH, "x-account-id": ACCOUNT, "User-Agent": "lmsbridge/test"}
    async with session.post(
        f"{standin.url}/unified/lms/users/{uid}/assignments",
        json={"learning_object_external_reference": REF, "status": {"value": "pending"}},
        headers=headers,
    ) as response:
        created = await response.json()
    assert response.status == 201
    assert set(created) == {"statusCode", "message", "timestamp", "data"}
    status, user, _ = await _get(session, f"{standin.url}/unified/lms/users/{uid}", headers)
    assert (status, user["data"]["id"], user["data"]["email"]) == (200, uid, "jane@acme.example")
    status, listed, _ = await _get(session, f"{standin.url}/unified/lms/assignments", headers, params={"user_id": uid})
    assert status == 200
    assert listed["next"] is None
    assert [(a["id"], a["status"]) for a in listed["data"]] == [(created["data"]["id"], {"value": "pending"})]
    status, listed, _ = await _get(session, f"{standin.url}/unified/lms/completions", headers)
    assert (status, listed) == (200, {"data": [], "next": None})
    status, missing, _ = await _get(session, f"{standin.url}/unified/lms/users/nobody", headers)
    assert status == 404
    assert set(missing) == {"statusCode", "message", "timestamp"}
    assert standin.violations == []
