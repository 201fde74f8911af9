"""Settings that cannot work stop start-up with one line naming the key (issue 13, item 8).

Each case was accepted before and failed later: an empty ``broker.retry_delays`` raised
``IndexError`` on the first 503; an account name that cannot be a queue name failed at the
broker; a ``limeplate`` source without its API dead-lettered every ``assignment.created``; a
malformed ``database_url`` was a raw traceback. Settings are loaded from real TOML files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from lmsbridge.errors import ConfigError
from lmsbridge.settings import Settings, load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PASSWORD = "hunter2-db-password"
SOURCE = f"""
[sources.acme]
platform = "exec"
secrets = ["{SECRET}"]
accounts = ["acc-1"]
"""


def refusal(tmp_path: Path, toml: str, *, sources: str = SOURCE) -> str:
    """The one-line ConfigError that loading ``toml`` (plus a valid source) gives."""
    path = tmp_path / "lmsbridge.toml"
    path.write_text(toml + sources)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message
    assert PASSWORD not in message
    return message


def test_a_valid_file_loads(tmp_path: Path) -> None:
    """The baseline the refusals below differ from by one key."""
    path = tmp_path / "lmsbridge.toml"
    path.write_text('database_url = "postgresql+asyncpg://lms@db.internal/lms"\n' + SOURCE)
    settings = load_settings(path)
    assert settings.sources["acme"].accounts == ["acc-1"]


@pytest.mark.parametrize("delays", ["[]", "[1, -5]", "[1, inf]", "[nan]", "[-0.5]"])
def test_unusable_retry_delays_are_refused(tmp_path: Path, delays: str) -> None:
    """``broker.retry_delays`` empty, negative, infinite or NaN: refused, naming the key."""
    assert "broker.retry_delays" in refusal(tmp_path, f"[broker]\nretry_delays = {delays}\n")


def test_a_backoff_cap_below_its_base_is_refused(tmp_path: Path) -> None:
    """``broker.backoff_cap`` under ``broker.backoff_base`` would cap every backoff below its first step."""
    assert "broker.backoff_cap" in refusal(tmp_path, "[broker]\nbackoff_base = 10\nbackoff_cap = 5\n")


def test_a_manual_rate_share_is_refused_with_what_replaced_it(tmp_path: Path) -> None:
    """``stackone.rate_limit_share`` (the per-process share of issue 14's past) is refused, saying the
    budget is now shared through the database, so an old config cannot silently keep a wrong share."""
    message = refusal(tmp_path, "[stackone]\nrate_limit_share = 0.5\n")
    assert "stackone" in message
    assert "rate_limit_share is gone" in message
    assert "one budget per API key through the database" in message


def float_fields(section: type[BaseModel]) -> list[str]:
    """The names of a settings section's float fields."""
    return [name for name, field in section.model_fields.items() if field.annotation in (float, "float")]


SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
FLOATS = [(name, key) for name, section in SECTIONS.items() for key in float_fields(section)]


@pytest.mark.parametrize(("section", "key"), FLOATS, ids=[f"{s}.{k}" for s, k in FLOATS])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_no_duration_or_share_may_be_infinite(tmp_path: Path, section: str, key: str, value: str) -> None:
    """Every float setting (delays, backoff, ages, timeouts, shares) refuses ``inf`` and ``nan``."""
    assert f"{section}.{key}" in refusal(tmp_path, f"[{section}]\n{key} = {value}\n")


@pytest.mark.parametrize(
    "account",
    ["", " ", "acc 1", "acc/1", "acc\\n1", "acc#1", "-acc", "a" * 250],
    ids=["empty", "blank", "space", "slash", "newline", "hash", "leading-dash", "too-long"],
)
def test_account_names_that_cannot_be_queue_names_are_refused(tmp_path: Path, account: str) -> None:
    """An account is a queue name (``{prefix}.sync.<account>``, at most 255 bytes) and a header value:
    empty, blank, odd characters or too long for the queue name is refused, naming the source's accounts."""
    sources = f'[sources.acme]\nplatform = "exec"\nsecrets = ["{SECRET}"]\naccounts = ["acc-ok", "{account}"]\n'
    assert "sources.acme.accounts" in refusal(tmp_path, "", sources=sources)


def test_a_long_prefix_counts_against_the_queue_name(tmp_path: Path) -> None:
    """The limit is on the whole queue name: a 200-character account fits the default prefix, not a long one."""
    account = "a" * 200
    sources = f'[sources.acme]\nplatform = "exec"\nsecrets = ["{SECRET}"]\naccounts = ["{account}"]\n'
    path = tmp_path / "ok.toml"
    path.write_text(sources)
    assert load_settings(path).sources["acme"].accounts == [account]
    assert "sources.acme.accounts" in refusal(tmp_path, f'[broker]\nprefix = "{"p" * 60}"\n', sources=sources)


@pytest.mark.parametrize("url", ["ftp://api.stackone.com", "api.stackone.com", "http://", "https:///v1", ""])
def test_stackone_base_url_must_be_http(tmp_path: Path, url: str) -> None:
    """``stackone.base_url`` that is not an http(s) URL with a host: refused, naming the key."""
    assert "stackone.base_url" in refusal(tmp_path, f'[stackone]\nbase_url = "{url}"\n')


@pytest.mark.parametrize(
    "missing",
    [
        'api_key = "scs_live_x"\n',
        'api_base_url = "https://api.limeplate.example"\n',
        "",
        'api_base_url = "https://api.limeplate.example"\napi_key = ""\n',
    ],
    ids=["no-api_base_url", "no-api_key", "neither", "empty-api_key"],
)
def test_a_limeplate_source_needs_its_platform_api(tmp_path: Path, missing: str) -> None:
    """Without ``api_base_url`` and ``api_key`` every ``assignment.created`` would be accepted and then
    dead-lettered (``no_platform_api``): refused at start, naming the source."""
    sources = f'[sources.sec]\nplatform = "limeplate"\nsecrets = ["{SECRET}"]\naccounts = ["acc-1"]\n{missing}'
    assert "sources.sec" in refusal(tmp_path, "", sources=sources)


def test_a_limeplate_api_base_url_must_be_http(tmp_path: Path) -> None:
    """The platform API's URL gets the same http(s) check as StackOne's."""
    sources = (
        f'[sources.sec]\nplatform = "limeplate"\nsecrets = ["{SECRET}"]\naccounts = ["acc-1"]\n'
        'api_base_url = "file:///etc/passwd"\napi_key = "k"\n'
    )
    assert "sources.sec.api_base_url" in refusal(tmp_path, "", sources=sources)


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "::",
        f"postgresql+asyncpg://lms:{PASSWORD}@db:notaport/lms",
        f"postgresql://lms:{PASSWORD}@db/lms",
        f"mysql+aiomysql://lms:{PASSWORD}@db/lms",
        "sqlite:///lmsbridge.db",
    ],
)
def test_a_database_url_lmsbridge_cannot_use_is_refused(tmp_path: Path, url: str) -> None:
    """Malformed, another database, or a driver that is not async: refused naming ``database_url``,
    never echoing the URL (it may hold a password)."""
    assert "database_url" in refusal(tmp_path, f'database_url = "{url}"\n')


@pytest.mark.parametrize(
    ("query", "named"),
    [("sslmode=require", "asyncpg takes ssl, not libpq's sslmode"), ("connect_timeout=5", "connect_timeout is not")],
)
def test_a_postgresql_url_option_asyncpg_does_not_take_is_refused(tmp_path: Path, query: str, named: str) -> None:
    """A URL option asyncpg does not take (libpq's ``sslmode``, the usual one) is refused at start,
    naming the option (and, for sslmode, asyncpg's ``ssl``), not the URL (before: every connection
    failed with a TypeError traceback in check, migrate, status and reconcile)."""
    message = refusal(tmp_path, f'database_url = "postgresql+asyncpg://lms:{PASSWORD}@db/lms?{query}"\n')
    assert "database_url" in message
    assert named in message


def test_asyncpg_url_options_are_accepted(tmp_path: Path) -> None:
    """asyncpg's own options (``ssl``, a statement cache size for PgBouncer) pass."""
    path = tmp_path / "lmsbridge.toml"
    url = f"postgresql+asyncpg://lms:{PASSWORD}@db/lms?ssl=require&prepared_statement_cache_size=0"
    path.write_text(f'database_url = "{url}"\n' + SOURCE)
    assert load_settings(path).database_url.get_secret_value() == url


def test_check_with_a_malformed_database_url_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """``lmsbridge check --config bad.toml``: one line naming the key on stderr, exit 2 (before: a traceback)."""
    config = tmp_path / "bad.toml"
    config.write_text(f'database_url = "postgresql+asyncpg://lms:{PASSWORD}@db:notaport/lms"\n' + SOURCE)
    result = subprocess.run(
        [sys.executable, "-m", "lmsbridge.cli", "--config", str(config), "check"],
        env={**os.environ, "LMSBRIDGE_STACKONE__API_KEY": "stackone-key"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, lines
    assert "database_url" in lines[0]
    assert PASSWORD not in result.stderr + result.stdout


def test_the_defaults_are_valid(tmp_path: Path) -> None:
    """Every default passes the checks above (only the sources need configuring)."""
    values: dict[str, Any] = {"sources": {"acme": {"platform": "exec", "secrets": [SECRET], "accounts": ["a"]}}}
    assert load_settings(None, **values).broker.retry_delays
