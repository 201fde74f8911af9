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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

_SECRET_VALUE = re.compile(r"(whsec_|whsk_|scs_live_|exec_live_|Basic\s+|Bearer\s+)[A-Za-z0-9+/=_\-.]+")
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


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(lambda m: m.group(1) + "***", value)
    return value


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Drop secret-named fields and mask secret-shaped values."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _mask(event_dict[key])
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
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
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


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(name)
