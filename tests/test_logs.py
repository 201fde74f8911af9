"""The fields a block binds for its log lines (`lmsbridge.logs.bound`)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from lmsbridge import logs
from lmsbridge.logs import bound, mask_values, merge_bound, redact, stamp
from lmsbridge.scrub import secret_values
from lmsbridge.settings import Settings

log = structlog.get_logger("tests.logs")


def test_a_block_adds_its_fields_and_an_inner_block_wins_until_it_ends() -> None:
    """Lines inside a block carry its fields, an inner block overrides a field only while it runs,
    a field given to the call itself beats both, and nothing is left bound after the block."""
    with capture_logs(processors=[merge_bound]) as logs:
        with bound(correlation_id="c1", account="a1"):
            log.info("outer")
            with bound(account="a2", record_id="r1"):
                log.info("inner")
                log.info("explicit", account="a3")
            log.info("outer.again")
        log.info("after")
    by_event = {entry["event"]: entry for entry in logs}
    assert by_event["outer"]["correlation_id"] == "c1"
    assert by_event["outer"]["account"] == "a1"
    assert by_event["inner"]["account"] == "a2"
    assert by_event["inner"]["record_id"] == "r1"
    assert by_event["inner"]["correlation_id"] == "c1"
    assert by_event["explicit"]["account"] == "a3"
    assert by_event["outer.again"]["account"] == "a1"
    assert "record_id" not in by_event["outer.again"]
    assert not {"correlation_id", "account", "record_id"} & set(by_event["after"])


async def test_tasks_started_inside_a_block_keep_its_fields_and_do_not_leak_theirs() -> None:
    """A task started in a block logs the block's fields even after the block ended; what the task
    binds for itself is not seen by its parent or a sibling."""
    release = asyncio.Event()

    async def child(name: str) -> None:
        with bound(record_id=name):
            await release.wait()
            log.info("child", name=name)

    with capture_logs(processors=[merge_bound]) as logs:
        with bound(correlation_id="parent"):
            tasks = [asyncio.create_task(child("r1")), asyncio.create_task(child("r2"))]
            await asyncio.sleep(0)
        log.info("parent.after")
        release.set()
        await asyncio.gather(*tasks)
    children = {entry["name"]: entry for entry in logs if entry["event"] == "child"}
    assert {name: entry["record_id"] for name, entry in children.items()} == {"r1": "r1", "r2": "r2"}
    assert all(entry["correlation_id"] == "parent" for entry in children.values())
    after = next(entry for entry in logs if entry["event"] == "parent.after")
    assert "correlation_id" not in after
    assert "record_id" not in after


def test_redact_masks_secret_named_fields_whatever_their_case_and_value() -> None:
    """A field named like a secret (api_key, Authorization, ...) is logged as *** whatever it holds."""
    line = redact(None, "info", {"event": "x", "API_KEY": "plain", "authorization": 42, "account": "acme"})
    assert line == {"event": "x", "API_KEY": "***", "authorization": "***", "account": "acme"}
    # The same keys again (remembered) and a new set: each is judged by its own names.
    assert redact(None, "info", {"event": "y", "API_KEY": "again"})["API_KEY"] == "***"
    assert redact(None, "info", {"event": "z", "apikey": "v"})["apikey"] == "v"


def test_redact_masks_secret_shaped_text_and_leaves_the_rest_as_it_was() -> None:
    """A value holding a token or a credential keeps its prefix and loses the rest; other values are untouched."""
    line = redact(
        None,
        "info",
        {
            "event": "stackone.failed",
            "error": "401 for Basic c2NzX2xpdmVfYWJjOg== on /assignments",
            "hint": "signed with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "bearer": "Bearer  abc.def-ghi",
            "message_id": "evt_123",
            "records": 2,
            "word": "Basic",  # a marker alone is not a secret
        },
    )
    assert line == {
        "event": "stackone.failed",
        "error": "401 for Basic *** on /assignments",
        "hint": "signed with whsec_***",
        "bearer": "Bearer  ***",
        "message_id": "evt_123",
        "records": 2,
        "word": "Basic",
    }
    clean = {"event": "webhook.queued", "source": "exec", "message_id": "msg_2a", "status": 202}
    assert redact(None, "info", dict(clean)) == clean


def test_stamp_gives_utc_now_to_the_microsecond_across_a_second_boundary() -> None:
    """Every line's timestamp is the current UTC time in ISO form ending in Z, also after the second turns."""
    seen: set[str] = set()
    deadline = time.monotonic() + 3
    while len(seen) < 2 and time.monotonic() < deadline:  # lines in two different seconds
        before = datetime.now(UTC)
        text = stamp(None, "info", {})["timestamp"]
        after = datetime.now(UTC)
        assert len(text) == len("2026-05-29T08:00:00.000000Z")
        assert text.endswith("Z")
        assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(text) <= after
        seen.add(text[:19])
        time.sleep(0.05)
    assert len(seen) == 2


def test_a_configured_logger_keeps_its_methods_and_still_writes_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    """After configure, a module's logger answers log.info without its proxy and each call still writes a line."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.configure(level="info", fmt="json")
    try:
        logger = logs.get_logger("tests.logs.kept")
        logger.info("first.line", n=1)
        assert "info" in vars(logger)  # kept: the next call finds it directly
        logger.info("second.line", n=2)
        logger.debug("filtered.line")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "line" in line]
    assert [orjson.loads(line)["event"] for line in lines] == ["first.line", "second.line"]


def test_the_settings_secrets_are_masked_wherever_a_line_holds_them() -> None:
    """Every secret the settings hold (a key with no known prefix, a password in a URL, the StackOne
    key's Basic token) is masked in any value of a line, nested ones too, once registered from the
    settings (before: only secret-shaped text was, a platform key without a known prefix quoted in
    a remote error went to the log whole, and nested values were never looked at)."""
    settings = Settings.model_validate(
        {
            "amqp_url": "amqp://bob:Amqp%40Pass9@rabbit:5672/",
            "database_url": "postgresql+asyncpg://app:DbPass77@db/lms",
            "stackone": {"api_key": "PlainStackOneKey1"},
            "sources": {
                "acme": {
                    "platform": "limeplate",
                    "secrets": ["hook-secret-42"],
                    "accounts": ["a"],
                    "api_base_url": "https://lime.example",
                    "api_key": "PlatformKeyNoPrefix",
                }
            },
        }
    )
    token = base64.b64encode(b"PlainStackOneKey1:").decode()
    assert set(secret_values(settings)) == {
        "Amqp%40Pass9", "Amqp@Pass9", "DbPass77", "PlainStackOneKey1", token, "hook-secret-42", "PlatformKeyNoPrefix"
    }  # fmt: skip
    mask_values(secret_values(settings))
    try:
        line = redact(
            None,
            "info",
            {
                "event": "reconcile.pass",
                "error": "400: Invalid API key provided: PlatformKeyNoPrefix",
                "detail": {"raw": ["DbPass77 in a list", {"auth": f"sent {token}"}]},
                "url": "amqp://bob:Amqp@Pass9@rabbit",
                "records": 3,
            },
        )
    finally:
        mask_values(())
    assert line == {
        "event": "reconcile.pass",
        "error": "400: Invalid API key provided: ***",
        "detail": {"raw": ["*** in a list", {"auth": "sent ***"}]},
        "url": "amqp://bob:***@rabbit",
        "records": 3,
    }
