"""The one structlog configuration: JSON lines in production, console output on a terminal.

Every log line may carry the fields of the message being handled (correlation id, message id,
account, ...): :func:`bound` sets them for a block and everything logged inside it, in this task
and the tasks it starts, carries them. They live in ONE context variable, set and reset once per
block (``structlog.contextvars`` keeps a variable per key and merges by walking the whole context
on every line, a visible share of the worker's time per event, issue 15). A last
processor masks anything that looks like a secret, as a belt to the braces of never
logging one. JSON is rendered by orjson straight to bytes (the receiver logs a line per
webhook, and the standard library's ``json`` was a visible share of its time); a value orjson
cannot encode (an integer past 64 bits) falls back to ``json`` rather than losing the line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from lmsbridge.scrub import SHORTEST, scrub

LogFormat = Literal["json", "console", "auto"]

_TOKEN_PREFIXES = ("whsec_", "whsk_", "scs_live_", "exec_live_")
_AUTH_SCHEMES = ("Basic", "Bearer")
_SECRET_VALUE = re.compile(
    "(" + "|".join([*map(re.escape, _TOKEN_PREFIXES), *(rf"{scheme}\s+" for scheme in _AUTH_SCHEMES)]) + ")"
    r"[A-Za-z0-9+/=_\-.]+"
)
_SECRET_MARKERS = _TOKEN_PREFIXES + _AUTH_SCHEMES  # a value holding none of these holds no secret-shaped text
_SECRET_KEYS = frozenset({"api_key", "secret", "secrets", "password", "authorization", "signature", "token"})


_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar("lmsbridge_log_fields", default=MappingProxyType({}))


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block (an inner block's value wins, until it ends)."""
    token = _FIELDS.set({**_FIELDS.get(), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def merge_bound(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The processor adding :func:`bound`'s fields; a field given to the call itself wins."""
    for key, value in _FIELDS.get().items():
        event_dict.setdefault(key, value)
    return event_dict


_KNOWN: list[tuple[str, ...]] = [()]  # the settings' secrets (mask_values), longest first


def mask_values(values: Iterable[str]) -> None:
    """Mask these exact values (the settings' secrets, :func:`lmsbridge.scrub.secret_values`) wherever
    a line holds them, at any depth, besides the secret-shaped ones (a known prefix or auth scheme):
    a key with no recognisable shape, quoted back in a remote error, is caught here too."""
    _KNOWN[0] = tuple(sorted({v for v in values if len(v) >= SHORTEST}, key=len, reverse=True))


def _mask(value: Any) -> Any:
    """``value`` with secret-shaped text and the settings' secrets masked, in strings at any depth."""
    if isinstance(value, str):
        return scrub(_SECRET_VALUE.sub(lambda m: m.group(1) + "***", value), _KNOWN[0])
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    return value


_SECRET_KEYS_OF: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # a line's keys -> those named like a secret
_SECRET_KEYS_KEPT = 4096  # distinct key sets remembered; past that the memo starts again


def _secret_keys(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    found = _SECRET_KEYS_OF.get(keys)
    if found is None:
        if len(_SECRET_KEYS_OF) >= _SECRET_KEYS_KEPT:
            _SECRET_KEYS_OF.clear()
        found = _SECRET_KEYS_OF[keys] = tuple(key for key in keys if str(key).lower() in _SECRET_KEYS)
    return found


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Drop secret-named fields and mask secret-shaped values.

    Every line passes here, so the usual line (no secret) costs one look-up of its keys and a
    substring search of its text values joined (lists and dicts as JSON) for the secrets' markers
    (a prefix, an auth scheme) and for the settings' secrets: only a line holding one has each
    value masked.
    """
    for key in _secret_keys(tuple(event_dict)):
        event_dict[key] = "***"
    values = event_dict.values()
    texts = [value if type(value) is str else _text(value) for value in values]
    joined = "\n".join(texts)
    known = _KNOWN[0]
    if any(marker in joined for marker in _SECRET_MARKERS) or (known and any(s in joined for s in known)):
        for key, value in event_dict.items():
            event_dict[key] = _mask(value)
    return event_dict


def _text(value: Any) -> str:
    """What :func:`redact` searches of a value that is not a plain string."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, default=str).decode()
    return ""


_STAMPED: list[tuple[int, str]] = [(-1, "")]  # the second last stamped and its text (one tuple: threads log too)


def stamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: now, in UTC, to the microsecond (``2026-05-29T08:00:00.000000Z``).

    structlog's ``TimeStamper`` builds an aware ``datetime`` and its ISO text for every line,
    a visible share of a line's cost; here the text up to the seconds is made once a second.
    """
    now = time.time()
    second, text = _STAMPED[0]
    if second != int(now):
        second = int(now)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _STAMPED[0] = (second, text)
    event_dict["timestamp"] = f"{text}.{int((now - second) * 1_000_000):06d}Z"
    return event_dict


def _json_bytes(_: WrappedLogger, __: str, event_dict: EventDict) -> bytes:
    """One JSON object, as bytes; ``repr`` for what JSON has no type for."""
    try:
        return orjson.dumps(event_dict, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, say
        return json.dumps(event_dict, default=repr).encode()


def _json_text(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    """:func:`_json_bytes` as text, for the standard library's handler."""
    return _json_bytes(logger, name, event_dict).decode()


# Libraries that are chatty at info; they log at warning and above unless the level is debug.
_CHATTY = ("aiormq", "aio_pika", "asyncio", "sqlalchemy", "aiohttp.access", "alembic.runtime.plugins")


def configure(*, level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library's logging once, at the CLI.

    structlog's own loggers render straight to stderr (the fast path). Everything else that logs
    through the standard library (aio-pika, aiormq, aiohttp, SQLAlchemy, Alembic, asyncio,
    ``warnings``) goes through a :class:`structlog.stdlib.ProcessorFormatter` with the same
    processors, masking included, so a stream holds one format: in ``json``, one object per line.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    factory: Any
    if fmt == "json":
        # Bytes straight to the buffer under stderr: one write per line, no str round trip.
        renderer, text_renderer = _json_bytes, _json_text
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer = text_renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            merge_bound,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                merge_bound,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                text_renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
    logging.captureWarnings(True)


class _Logger:
    """structlog's lazy logger, with its methods kept once structlog keeps the logger they belong to.

    Modules take their logger at import (``log = get_logger(__name__)``), before :func:`configure`
    runs, so structlog hands out a proxy that finds its logger on first use. The proxy answers
    ``log.info`` through ``__getattr__`` on every call: a failed attribute look-up first, which
    builds an ``AttributeError`` with its message, then the look-up of the logger. A debug line
    filtered out paid that too. Here the method found is kept on this object once structlog keeps
    its logger (``cache_logger_on_first_use``, as :func:`configure` sets): the next call finds it
    directly. Without that setting (the tests' default) every call asks the proxy, as before.
    """

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy's and pickle's probes (on a copy, before _proxy exists): not a logger's
            raise AttributeError(name)
        value = getattr(self._proxy, name)
        if structlog.get_config()["cache_logger_on_first_use"]:
            self.__dict__[name] = value
        return value


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return _Logger(name)
