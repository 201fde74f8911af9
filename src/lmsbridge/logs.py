"""The one structlog configuration: JSON lines in production, console output on a terminal.

Every log line may carry the correlation id through ``structlog.contextvars``. A last
processor masks anything that looks like a secret, as a belt to the braces of never
logging one.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["json", "console", "auto"]

_SECRET_VALUE = re.compile(r"(whsec_|whsk_|scs_live_|exec_live_|Basic\s+|Bearer\s+)[A-Za-z0-9+/=_\-.]+")
_SECRET_KEYS = frozenset({"api_key", "secret", "secrets", "password", "authorization", "signature", "token"})


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


def configure(*, level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog and stdlib logging once, at the CLI."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")


def get_logger(name: str) -> Any:
    """A structlog logger named after its module."""
    return structlog.get_logger(name)
