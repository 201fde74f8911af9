"""Every StackOne failure maps to the exception named for its consequence, without leaking the key."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from lmsbridge.errors import (
    AlreadyExists,
    DeadLetter,
    LmsbridgeError,
    ParkRecord,
    PauseAccount,
    RetryAfter,
    RetryLater,
    WriteUncertain,
)
from lmsbridge.stackone import RateLimiter, StackOneClient, retry_after_seconds, stackone_error
from lmsbridge.testing.stackone import StackOneStandIn
from tests.stackone.conftest import ACCOUNT, KEY, ClientFactory

REF = "exec:scenario:renewal"
BODY = {"learning_object_external_reference": REF}
COMPLETION = {"learning_object_external_reference": REF, "result": {"value": "Pass"}}
NOW = "2026-06-01T09:00:00.000Z"
Call = Callable[[StackOneClient, str], Awaitable[object]]


def _calls() -> dict[str, Call]:
    return {
        "create_assignment": lambda c, uid: c.create_assignment(ACCOUNT, uid, BODY),
        "create_completion": lambda c, uid: c.create_completion(ACCOUNT, uid, {**BODY, "result": {"value": "Pass"}}),
        "list_user_assignments": lambda c, uid: c.list_user_assignments(ACCOUNT, uid),
        "probe": lambda c, uid: c.probe(ACCOUNT),
        "upsert_content_batch": lambda c, uid: c.upsert_content_batch(ACCOUNT, [{"external_reference": REF}]),
    }


def _assert_no_secret(exc: BaseException) -> None:
    token = base64.b64encode(f"{KEY}:".encode()).decode()
    text = f"{exc} {exc!r} {getattr(exc, 'detail', '')}"
    assert KEY not in text
    assert token not in text


@pytest.mark.parametrize(
    ("status", "operation", "expected", "not_expected"),
    [
        (429, "probe", RetryAfter, WriteUncertain),
        (429, "create_assignment", RetryAfter, WriteUncertain),
        (408, "create_assignment", WriteUncertain, None),
        (408, "create_completion", WriteUncertain, None),
        (408, "list_user_assignments", RetryAfter, WriteUncertain),
        (408, "upsert_content_batch", RetryAfter, WriteUncertain),
        (500, "create_assignment", RetryLater, RetryAfter),
        (502, "probe", RetryLater, RetryAfter),
        (503, "upsert_content_batch", RetryLater, RetryAfter),
        (504, "list_user_assignments", RetryLater, RetryAfter),
        (599, "probe", RetryLater, RetryAfter),
        (409, "create_assignment", AlreadyExists, None),
        (401, "probe", PauseAccount, None),
        (403, "create_completion", PauseAccount, None),
        (412, "upsert_content_batch", PauseAccount, None),
        (404, "create_assignment", ParkRecord, None),
        (404, "list_user_assignments", ParkRecord, None),
        (404, "probe", PauseAccount, None),
        (404, "upsert_content_batch", PauseAccount, None),
        (400, "create_assignment", DeadLetter, None),
        (422, "create_completion", DeadLetter, None),
        (501, "upsert_content_batch", DeadLetter, None),
        (418, "probe", DeadLetter, None),
    ],
)
async def test_each_status_maps_to_its_consequence(
    client: StackOneClient,
    standin: StackOneStandIn,
    status: int,
    operation: str,
    expected: type[LmsbridgeError],
    not_expected: type[LmsbridgeError] | None,
) -> None:
    """The status StackOne answers decides the exception; its message names operation and status, never the key."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(status, retry_after=3 if status in (408, 429) else None)
    with pytest.raises(expected) as caught:
        await _calls()[operation](client, uid)
    if not_expected is not None:
        assert not isinstance(caught.value, not_expected)
    assert operation in str(caught.value)
    assert f"HTTP {status}" in str(caught.value)
    _assert_no_secret(caught.value)


async def test_429_waits_retry_after_and_pauses_the_whole_key(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """A 429 becomes RetryAfter(delay=Retry-After) and stops the limiter for every account that long."""
    limiter = RateLimiter(6000)
    client = make_client(limiter=limiter)
    standin.fail_next(429, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await client.probe(ACCOUNT)
    assert caught.value.delay == 7
    assert 6 < limiter.snapshot()["paused_for"] <= 7
    other = asyncio.create_task(client.probe("acc-other"))
    await asyncio.sleep(0.1)
    assert not other.done()  # another account waits out the pause too
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other


async def test_429_without_retry_after_waits_60_seconds(make_client: ClientFactory, standin: StackOneStandIn) -> None:
    """StackOne's documented default applies when Retry-After is absent."""
    limiter = RateLimiter(1000)
    standin.fail_next(429)
    with pytest.raises(RetryAfter) as caught:
        await make_client(limiter=limiter).probe(ACCOUNT)
    assert caught.value.delay == 60
    assert limiter.snapshot()["paused_for"] > 59


async def test_408_on_a_create_is_an_uncertain_write_that_pauses_no_other_account(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """A create answered 408 (one account's provider too slow for StackOne's 60 s; StackOne sends
    it with Retry-After) raises WriteUncertain with Retry-After as its delay, and only that record
    waits: the key's limiter is not paused and another account's call goes through at once (before:
    every 408 paused the whole key, so one slow LMS stalled every customer for Retry-After)."""
    limiter = RateLimiter(1000)
    client = make_client(limiter=limiter)
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(408, retry_after=12, path_contains="/assignments")
    with pytest.raises(WriteUncertain) as caught:
        await client.create_assignment(ACCOUNT, uid, BODY)
    assert caught.value.delay == 12
    assert limiter.snapshot()["paused_for"] == 0
    await asyncio.wait_for(client.probe("acc-other"), 2.0)


@pytest.mark.parametrize("data", [{"id": None, "remote_id": None}, {}], ids=["null-id", "no-id"])
async def test_a_201_whose_created_id_is_null_is_a_write(
    make_client: ClientFactory, standin: StackOneStandIn, data: dict[str, Any]
) -> None:
    """A create answered 201 with a ``CreateResult`` whose ``data.id`` is null (the spec makes it
    nullable: the LMS behind gave no id) is a success with no id, as a 409 is: nothing more is
    asked of StackOne (before: WriteUncertain, so every such create was listed again, and with a
    provider slow to list it, written a second time after the lease)."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    answer = {"statusCode": 201, "message": "Record created successfully.", "timestamp": NOW, "data": data}
    standin.fail_next(201, method="POST", path_contains="/completions", write_before_failing=True, body=answer)
    client = make_client()
    assert await client.create_completion(ACCOUNT, uid, COMPLETION) is None
    assert len(standin.completions(ACCOUNT)) == 1


@pytest.mark.parametrize("body", [{"statusCode": 201, "message": "created"}, {"data": "x"}, []])
async def test_a_2xx_without_a_result_object_is_an_uncertain_write(
    make_client: ClientFactory, standin: StackOneStandIn, body: Any
) -> None:
    """A 2xx create answer without a ``data`` object proves nothing: WriteUncertain, listed before writing again."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(201, method="POST", path_contains="/completions", body=body)
    with pytest.raises(WriteUncertain):
        await make_client().create_completion(ACCOUNT, uid, COMPLETION)


async def test_a_create_that_times_out_is_an_uncertain_write(
    make_client: ClientFactory, standin: StackOneStandIn
) -> None:
    """No answer within the timeout on a create: WriteUncertain, checked once StackOne's 60 s are over."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    standin.fail_next(0, delay=0.4, path_contains="/assignments")
    client = make_client(timeout=0.1)
    with pytest.raises(WriteUncertain) as caught:
        await client.create_assignment(ACCOUNT, uid, BODY)
    assert caught.value.delay == pytest.approx(60 - 0.1)  # StackOne may work on it for 60 s
    assert "create_assignment" in str(caught.value)
    for _ in range(50):  # the stand-in finishes the write after the client gave up
        if standin.assignments(ACCOUNT):
            break
        await asyncio.sleep(0.05)
    assert len(standin.assignments(ACCOUNT)) == 1


async def test_a_read_that_times_out_is_retried_later(make_client: ClientFactory, standin: StackOneStandIn) -> None:
    """A timeout on a read is a plain RetryLater: nothing can have been written."""
    standin.fail_next(0, delay=0.4)
    with pytest.raises(RetryLater) as caught:
        await make_client(timeout=0.1).probe(ACCOUNT)
    assert not isinstance(caught.value, RetryAfter)


async def test_connection_refused_is_retried_later_even_for_a_create(
    make_client: ClientFactory, refused_url: str
) -> None:
    """Nothing listening: RetryLater, not WriteUncertain, since the request never left."""
    client = make_client(base_url=refused_url)
    for name in ("create_assignment", "probe"):
        with pytest.raises(RetryLater) as caught:
            await _calls()[name](client, "usr_1")
        assert not isinstance(caught.value, RetryAfter)
        _assert_no_secret(caught.value)


async def test_409_means_the_record_already_exists(client: StackOneClient, standin: StackOneStandIn) -> None:
    """Creating the same assignment twice: the stand-in answers 409 and the client raises AlreadyExists."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    await client.create_assignment(ACCOUNT, uid, BODY)
    with pytest.raises(AlreadyExists):
        await client.create_assignment(ACCOUNT, uid, BODY)
    assert standin.conflicts == 1
    assert len(standin.assignments(ACCOUNT)) == 1


async def test_a_disabled_account_pauses_that_account(client: StackOneClient, standin: StackOneStandIn) -> None:
    """412 (integration disabled) raises PauseAccount naming the account and status; others work on."""
    standin.disable_account(ACCOUNT)
    with pytest.raises(PauseAccount) as caught:
        await client.probe(ACCOUNT)
    assert (caught.value.account, caught.value.status) == (ACCOUNT, 412)
    await client.probe("acc-other")
    standin.enable_account(ACCOUNT)
    await client.probe(ACCOUNT)


async def test_a_wrong_api_key_pauses_and_is_never_echoed(make_client: ClientFactory, standin: StackOneStandIn) -> None:
    """401 from a wrong key raises PauseAccount(status 401); neither key appears in the message."""
    wrong = "sk_wrong_key_value_123"
    with pytest.raises(PauseAccount) as caught:
        await make_client(api_key=wrong).probe(ACCOUNT)
    assert caught.value.status == 401
    assert wrong not in str(caught.value)
    _assert_no_secret(caught.value)


async def test_an_unknown_user_parks_the_record(client: StackOneClient, standin: StackOneStandIn) -> None:
    """404 under /users/{id}/ (the stand-in does not know the user) parks the record as user_not_found."""
    with pytest.raises(ParkRecord) as caught:
        await client.create_assignment(ACCOUNT, "usr_missing", BODY)
    assert caught.value.reason == "user_not_found"
    with pytest.raises(ParkRecord):
        await client.list_user_completions(ACCOUNT, "usr_missing")
    assert standin.violations == []


async def test_422_dead_letters_with_the_provider_errors(client: StackOneClient, standin: StackOneStandIn) -> None:
    """422 raises DeadLetter(stackone_422) carrying StackOne's message and provider_errors as detail."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    provider_errors = [{"status": 400, "url": "https://lms.example/api", "raw": {"error": "due_date in the past"}}]
    standin.fail_next(
        422,
        body={"statusCode": 422, "message": "Provider rejected the request", "provider_errors": provider_errors},
    )
    with pytest.raises(DeadLetter) as caught:
        await client.create_assignment(ACCOUNT, uid, BODY)
    assert caught.value.reason == "stackone_422"
    assert caught.value.detail == {"message": "Provider rejected the request", "provider_errors": provider_errors}
    assert "Provider rejected the request" in str(caught.value)


async def test_501_dead_letters_as_unsupported(client: StackOneClient, standin: StackOneStandIn) -> None:
    """501 (the provider does not support the operation) dead-letters, it is not retried."""
    standin.fail_next(501)
    with pytest.raises(DeadLetter) as caught:
        await client.upsert_content_batch(ACCOUNT, [{"external_reference": REF}])
    assert caught.value.reason == "stackone_501"
    assert caught.value.detail == {"message": "Not Implemented", "provider_errors": None}


async def test_a_message_echoing_the_key_is_scrubbed(client: StackOneClient, standin: StackOneStandIn) -> None:
    """Even when StackOne's error message contains the key or the Basic token, the exception does not."""
    token = base64.b64encode(f"{KEY}:".encode()).decode()
    standin.fail_next(400, body={"statusCode": 400, "message": f"bad key {KEY} / Basic {token}"})
    with pytest.raises(DeadLetter) as caught:
        await client.probe(ACCOUNT)
    _assert_no_secret(caught.value)
    assert "***" in str(caught.value)


def test_an_error_body_that_is_not_json_still_maps() -> None:
    """A proxy's HTML error page: the status decides, the text (trimmed) becomes the message."""
    exc = stackone_error(
        "probe", ACCOUNT, 400, {}, b"<html>Bad gateway config</html>", is_create=False, user_scoped=False
    )
    assert isinstance(exc, DeadLetter)
    assert exc.detail == {"message": "<html>Bad gateway config</html>", "provider_errors": None}
    assert isinstance(stackone_error("probe", ACCOUNT, 502, {}, b"", is_create=False, user_scoped=False), RetryLater)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After may be delta-seconds or an HTTP date; unreadable or absent means 60."""
    assert retry_after_seconds({"Retry-After": "7"}) == 7
    assert retry_after_seconds({}) == 60
    assert retry_after_seconds({"Retry-After": "soon"}) == 60
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_seconds({"Retry-After": later}) <= 30


async def test_a_connection_dropped_after_sending_a_create_is_an_uncertain_write(make_client: ClientFactory) -> None:
    """The server reads the create and hangs up without answering: WriteUncertain, the write may have landed."""
    received: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(base_url=f"http://127.0.0.1:{port}")
        with pytest.raises(WriteUncertain) as caught:
            await client.create_completion(ACCOUNT, "usr_1", BODY)
        assert caught.value.delay >= 5
        with pytest.raises(RetryLater) as read_caught:
            await client.list_user_completions(ACCOUNT, "usr_1")
        assert not isinstance(read_caught.value, RetryAfter)
    finally:
        server.close()
        await server.wait_closed()
    assert received[0].startswith(b"POST /unified/lms/users/usr_1/completions")


@pytest.mark.parametrize("padding", [0, 280, 296])
async def test_a_key_quoted_in_an_error_is_scrubbed_before_the_message_is_cut(
    client: StackOneClient, standin: StackOneStandIn, padding: int
) -> None:
    """An error message quoting the API key after ``padding`` characters (and in provider_errors):
    the key is gone from the error whatever the padding (before: the message was cut to 300
    characters first, so a key straddling the cut kept its first part in the error, the log line,
    the dead letter's headers and the database)."""
    uid = standin.add_user(ACCOUNT, "jane@acme.example")
    message = "x" * padding + f" refused key {KEY}"
    errors = [{"raw": {"error": f"bad token {KEY}"}}]
    standin.fail_next(400, body={"statusCode": 400, "message": message, "provider_errors": errors})
    with pytest.raises(DeadLetter) as caught:
        await client.create_assignment(ACCOUNT, uid, BODY)
    shown = f"{caught.value} {caught.value.detail}"
    assert not any(KEY[:n] in shown for n in range(6, len(KEY) + 1)), shown
