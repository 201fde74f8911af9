"""Typed settings: a TOML file plus ``LMSBRIDGE_`` environment overrides (``__`` nests).

Built once, in :mod:`lmsbridge.cli`, and passed down; no module reads it globally.
Every secret is a :class:`~pydantic.SecretStr`, so it prints as ``**********``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lmsbridge.errors import ConfigError

Platform = Literal["limeplate", "exec"]
SignatureScheme = Literal["standard-webhooks", "stripe", "github"]
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# An account names a queue ({prefix}.sync.<account>) and travels as the x-account-id header.
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
_MAX_QUEUE_NAME = 255
"""RabbitMQ's limit on a queue name, in bytes of UTF-8."""
_DATABASE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _http_url(value: str) -> str:
    """An absolute http(s) URL with a host; the value is not echoed (it may carry credentials)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class _Section(BaseModel):
    # No duration, delay or share can be infinite or NaN (TOML has ``inf`` and ``nan``).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReceiverSettings(_Section):
    """The webhook receiver (``lmsbridge serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(256 * 1024, gt=0)
    publish_timeout: float = Field(5.0, gt=0, description="seconds to wait for the broker's confirm")
    retry_after: int = Field(5, ge=1, description="Retry-After seconds sent with a 503")
    shutdown_grace: float = Field(10.0, ge=0, description="seconds to finish requests in flight")
    reuse_port: bool = Field(
        False,
        description="bind with SO_REUSEPORT, so several `lmsbridge serve` processes on one host share the "
        "port and the kernel spreads connections over them (one Python process uses one core)",
    )
    body_timeout: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="seconds for a request's whole body to arrive; then 408, closed"
    )
    max_reading: int = Field(
        64,
        ge=1,
        description="request bodies read at once (memory: at most this times max_body_bytes); "
        "more get 503 with Retry-After",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="webhooks handled at once; more get 503 with Retry-After at once. Unset: no bound under "
        "`serve`, 64 under `run`, where the receiver shares one event loop with the worker and a flood would "
        "starve the worker's LMS writes",
    )
    keepalive_timeout: float = Field(
        75.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a connection may stay idle, or take to send its request line and headers; behind a "
        "load balancer that reuses connections keep it above the balancer's idle timeout (60 s on AWS ALB), or "
        "requests race the close",
    )


class StackOneSettings(_Section):
    """The StackOne unified LMS API."""

    base_url: str = "https://api.stackone.com"
    api_key: SecretStr = SecretStr("")
    timeout: float = Field(30.0, gt=0, description="seconds per request (StackOne itself gives up at 60)")
    rate_limit_per_minute: int = Field(
        1000,
        gt=0,
        description="requests per minute for this API key, shared by every process using it (through the database)",
    )
    directory_refresh_seconds: float = Field(900.0, gt=0, description="how often user directories refresh")
    max_pause_seconds: float = Field(
        300.0,
        gt=0,
        allow_inf_nan=False,
        description="the longest a Retry-After from StackOne may stop every request of the key; "
        "longer asks are cut to this (and logged)",
    )
    page_size: int = Field(100, ge=1, le=1000)

    _base_url = field_validator("base_url")(_http_url)

    @model_validator(mode="before")
    @classmethod
    def _no_manual_share(cls, data: Any) -> Any:
        if isinstance(data, dict) and "rate_limit_share" in data:
            raise ValueError(
                "rate_limit_share is gone: every process draws on one budget per API key through the "
                "database, so there is no share to set; remove it"
            )
        return data

    delete_superseded_completions: bool = Field(
        False,
        description="delete a completion a better retake replaced (a Fail before a Pass); false keeps it as history",
    )


class BrokerSettings(_Section):
    """RabbitMQ topology and consumer behaviour."""

    prefix: str = Field("lmsbridge", pattern=r"^[A-Za-z0-9._-]+$", description="names of exchanges/queues")
    prefetch: int = Field(
        256,
        ge=1,
        description="unacked messages a consumer holds per queue; deeper lets more events share each group "
        "commit (end to end 569 -> 686 LMS writes/s from 64 to 256 on 2 cores), and bounds how far storing "
        "runs ahead of the LMS writes",
    )
    publish_linger: float = Field(
        0.005,
        ge=0,
        le=1.0,
        description="seconds an accepted event's publish waits for others to go to RabbitMQ with it when "
        "another is in flight, all of them in one write (a lone event goes at once; 0: always at once); a quorum "
        "queue spends about half the CPU on a message that arrives in a group of four, and the receiver about a "
        "third less CPU a request",
    )
    ack_linger: float = Field(
        0.005,
        ge=0,
        le=1.0,
        description="seconds a settled message's ack waits to go to RabbitMQ in one frame with others on its "
        "channel (0: at once); never past a message still being handled",
    )
    max_attempts: int = Field(
        8,
        ge=1,
        description="tries of a message that fails with an unexpected error (a bug) before it is dead-lettered as "
        "internal_error; StackOne's transient failures are bounded by max_retry_age instead",
    )
    retry_delays: tuple[float, ...] = Field(
        (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0),
        description="the delay queues' TTLs in seconds: a backoff is rounded at random to a neighbouring one (so "
        "its mean stays), a Retry-After up to the next. Changing them on a running broker needs the "
        "{prefix}.delay.N queues deleted first",
    )
    backoff_base: float = Field(1.0, gt=0, description="first backoff ceiling in seconds (full jitter, doubling)")
    backoff_cap: float = Field(300.0, gt=0, description="the longest backoff in seconds")
    max_retry_age: float = Field(
        86400.0,
        gt=0,
        description="a record failing transiently (5xx, timeouts) for longer than this many seconds since its "
        "first failure in a row is dead-lettered (retry_age_exceeded); time in a paused account does not count",
    )
    breaker_window: float = Field(60.0, gt=0, description="seconds of sync outcomes the circuit breaker looks at")
    breaker_min_calls: int = Field(20, ge=1, description="outcomes in the window before the breaker may open")
    breaker_failure_rate: float = Field(
        0.9,
        gt=0,
        le=1.0,
        description="share of an account's syncs failing with 5xx or timeouts in the window that pauses the "
        "account (probed until a call succeeds) instead of burning retries",
    )
    probe_max_seconds: float = Field(
        60.0,
        gt=0,
        description="the longest wait between two probes of a paused account (the first is "
        "worker.pause_probe_seconds, doubling)",
    )
    sweep_after: float = Field(
        900.0,
        gt=0,
        description="a record pending this many seconds without a change or a live lease is queued again "
        "(its message was lost), unless its account's sync queue holds messages; repeats are harmless",
    )
    sweep_interval: float = Field(60.0, gt=0, description="seconds between two sweeps for lost records")
    queue_type: Literal["quorum", "classic"] = "quorum"

    @field_validator("retry_delays")
    @classmethod
    def _delays_usable(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # Retries index the delay levels: none breaks the first retry, a negative TTL the queue.
        if not value:
            raise ValueError("needs at least one delay")
        if any(step < 0 for step in value):
            raise ValueError("delays must not be negative")
        return value

    @model_validator(mode="after")
    def _backoff_grows(self) -> BrokerSettings:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("broker.backoff_cap must be at least broker.backoff_base")
        return self


class WorkerSettings(_Section):
    """The consumer process (``lmsbridge worker``)."""

    metrics_port: int = Field(9108, ge=0, le=65535, description="0 disables the worker's metrics server")
    drain_timeout: float = Field(25.0, ge=0, description="seconds to finish work on SIGTERM")
    inbox_retention_days: float = Field(14.0, gt=0, description="how long message ids are remembered")
    pause_probe_seconds: float = Field(5.0, gt=0, description="first wait before probing a paused account")
    inline_sync_limit: int = Field(
        32,
        ge=0,
        description="an event touching at most this many (record, account) pairs has them synced by the "
        "consumer that stored it, before it is acked; larger events (teams, orgs) queue one sync task each. "
        "0 queues every sync",
    )
    sync_lease_seconds: float = Field(
        120.0,
        ge=1,
        description="how long one consumer holds a record while writing it; renewed just before every "
        "create is sent (or taken under a second before, as the event it syncs was stored). Keep it above "
        "StackOne's own 60 s per request",
    )


class ReconcileSettings(_Section):
    """Reconciliation: reading the platforms' list APIs (and the LMS) to catch what webhooks missed."""

    interval: float = Field(
        6 * 3600.0, ge=0, description="seconds between the worker's reconcile passes; 0 turns them off"
    )
    budget_share: float = Field(
        0.2,
        gt=0,
        le=1.0,
        description="the most of the StackOne rate budget reconciliation may use (live syncs the rest)",
    )
    lease_seconds: float = Field(
        900.0, gt=0, description="a worker's hold on the periodic pass (renewed while it runs), so one runs at a time"
    )
    max_attempts: int = Field(
        6, ge=1, description="tries of one platform API call (429/5xx/timeouts) before a pass stops"
    )
    backoff_seconds: float = Field(1.0, ge=0, description="first wait between tries of a platform call (doubles)")
    max_wait_seconds: float = Field(120.0, ge=0, description="longest wait between tries, whatever Retry-After says")
    timeout: float = Field(30.0, gt=0, description="seconds per platform API request")


class SourceSettings(_Section):
    """One platform workspace sending to ``POST /webhooks/{name}``."""

    platform: Platform
    signature: SignatureScheme = "standard-webhooks"
    secrets: list[SecretStr] = Field(min_length=1)
    secret_names: list[str] | None = Field(
        None, description="names for the secrets, by position, for logs and metrics during rotation"
    )
    accounts: list[str] = Field(min_length=1, description="StackOne linked account ids pushed to")
    api_base_url: str | None = None
    api_key: SecretStr | None = None
    signature_header: str | None = Field(None, description="header for the stripe scheme")
    delivery_header: str | None = Field(None, description="message id header for the github scheme")
    tolerance_seconds: int = Field(300, ge=1)
    future_skew_seconds: int = Field(30, ge=0)

    @model_validator(mode="after")
    def _names_match(self) -> SourceSettings:
        if self.secret_names is not None and len(self.secret_names) != len(self.secrets):
            raise ValueError("secret_names must name every secret, in order")
        return self

    @model_validator(mode="after")
    def _platform_api(self) -> SourceSettings:
        # Team and org assignments are expanded through the platform's API; without it each one is dead-lettered.
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if self.platform == "limeplate" and not (self.api_base_url and key):
            raise ValueError("a limeplate source needs api_base_url and api_key (its assignments are expanded there)")
        return self

    @field_validator("accounts")
    @classmethod
    def _accounts_usable(cls, value: list[str]) -> list[str]:
        for index, account in enumerate(value):
            if not _ACCOUNT.match(account):
                raise ValueError(
                    f"account {index} must be letters, digits, '.', '_', ':' or '-' (it names a queue), "
                    "starting with a letter or digit"
                )
        return value

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    def key_name(self, index: int) -> str:
        """The loggable name of the secret at ``index`` (never the secret itself)."""
        if self.secret_names is not None:
            return self.secret_names[index]
        return f"key{index}"


class Settings(BaseSettings):
    """Everything lmsbridge needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="LMSBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///lmsbridge.db")
    receiver: ReceiverSettings = ReceiverSettings()
    stackone: StackOneSettings = StackOneSettings()
    broker: BrokerSettings = BrokerSettings()
    worker: WorkerSettings = WorkerSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    sources: dict[Annotated[str, Field(pattern=_SOURCE_NAME.pattern)], SourceSettings] = {}

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        for name in value:
            if not _SOURCE_NAME.match(name):
                raise ValueError(f"source name {name!r} must be a URL path segment")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_usable(cls, value: SecretStr) -> SecretStr:
        try:
            driver = make_url(value.get_secret_value()).drivername
        except (ArgumentError, ValueError):
            raise ValueError("is not a database URL (sqlite+aiosqlite:///path or postgresql+asyncpg://...)") from None
        if driver not in _DATABASE_DRIVERS:
            raise ValueError(f"must use one of the drivers {', '.join(_DATABASE_DRIVERS)}")
        if driver == "postgresql+asyncpg":
            _asyncpg_options(make_url(value.get_secret_value()).query)
        return value

    @model_validator(mode="after")
    def _queue_names_fit(self) -> Settings:
        from lmsbridge.broker.topology import Names  # the one place queue names are made (imports settings)

        names = Names(self.broker.prefix)
        for source_name, source in self.sources.items():
            if len(names.intake(source_name).encode()) > _MAX_QUEUE_NAME:
                raise ValueError(f"broker.prefix: too long for source {source_name}'s queue name")
            for index, account in enumerate(source.accounts):
                if len(names.sync(account).encode()) > _MAX_QUEUE_NAME:
                    raise ValueError(
                        f"sources.{source_name}.accounts: account {index} makes its queue name "
                        f"({names.sync('<account>')}) longer than {_MAX_QUEUE_NAME} bytes"
                    )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_call(self) -> Settings:
        # A lease that ran out during a create would let a second consumer write the record again.
        if self.worker.sync_lease_seconds <= self.stackone.timeout:
            raise ValueError("worker.sync_lease_seconds must be longer than stackone.timeout")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    def accounts(self) -> list[str]:
        """Every StackOne account any source pushes to, without repeats, in configuration order."""
        seen: dict[str, None] = {}
        for source in self.sources.values():
            for account in source.accounts:
                seen.setdefault(account, None)
        return list(seen)


def _check_settings_file(path: Path) -> None:
    """Fail with one line naming ``path`` when it is missing, unreadable or not TOML (never echo its content)."""
    if path.is_dir():
        raise ConfigError(f"config: {path}: is a directory, not a settings file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path}: not UTF-8 text") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path}: not valid TOML: {exc}") from None


def _asyncpg_options(query: Mapping[str, Any]) -> None:
    """Refuse a URL option asyncpg does not take (it would fail every connection with a TypeError);
    libpq's ``sslmode``, the usual one, is named with asyncpg's ``ssl``. Names keys, never values."""
    import inspect

    import asyncpg

    known = set(inspect.signature(asyncpg.connect).parameters) - {"dsn", "loop", "connection_class", "record_class"}
    known |= {"prepared_statement_cache_size", "prepared_statement_name_func"}  # SQLAlchemy's own
    for key in query:
        if key == "sslmode":
            raise ValueError("asyncpg takes ssl, not libpq's sslmode: ?ssl=require (or verify-full, ...)")
        if key not in known:
            raise ValueError(f"{key} is not a connection option asyncpg takes ({', '.join(sorted(known))})")


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``config`` (or ``$LMSBRIDGE_CONFIG``), environment and overrides.

    Raises :class:`ConfigError` with one line naming the first bad key; never echoes a value.
    """
    path = config if config is not None else os.environ.get("LMSBRIDGE_CONFIG")
    if path is not None:
        _check_settings_file(Path(path))
    cls: type[Settings] = Settings
    if path is not None:
        cls = type("FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": Path(path)}})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise ConfigError(f"config: {key}: {first['msg']}") from None
    except SettingsError as exc:
        # An environment variable for a list or table that is not JSON: the message names the field
        # and where it came from, never the value (which may hold a secret).
        raise ConfigError(f"config: {exc}: a list or table set in an environment variable is written as JSON") from None
