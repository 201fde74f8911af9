"""Secrets taken out of what a remote party sends back, and the list of secrets a process holds.

StackOne and the training platforms may quote a credential in an error message ("Invalid API
key provided: ..."). Such a text is scrubbed of the caller's secrets before it is cut to length
(a secret straddling the cut would otherwise leave its first part behind) and before it reaches
an exception, a log line, a dead letter's headers or the database. :func:`secret_values` lists
every secret a :class:`~lmsbridge.settings.Settings` holds, for the logs' last line of defence
(:func:`lmsbridge.logs.mask_values`).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from lmsbridge.settings import Settings

T = TypeVar("T")

MASK = "***"
SHORTEST = 4
"""Secrets shorter than this are not searched for: masking every "abc" would mangle text, not protect it."""


def scrub(value: T, secrets: Iterable[str]) -> T:
    """``value`` with every occurrence of each secret replaced by ``***``, in strings at any depth
    of lists and dicts (other values are returned as they are)."""
    wanted = sorted((s for s in secrets if len(s) >= SHORTEST), key=len, reverse=True)
    return _scrub(value, wanted) if wanted else value


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item, secrets) for item in value)
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    return value


def secret_values(settings: Settings) -> list[str]:
    """Every secret ``settings`` holds, as text could quote it: the passwords in the RabbitMQ and
    database URLs (as written and decoded), the StackOne key and its Basic token, each source's
    signing secrets and platform API key."""
    values: list[str] = []
    for url in (settings.amqp_url.get_secret_value(), settings.database_url.get_secret_value()):
        password = _password(url)
        if password:
            values += [password, unquote(password)]
    key = settings.stackone.api_key.get_secret_value()
    if key:
        values += [key, base64.b64encode(f"{key}:".encode()).decode("ascii")]
    for source in settings.sources.values():
        values += [s.get_secret_value() for s in source.secrets]
        if source.api_key is not None:
            values.append(source.api_key.get_secret_value())
    return list(dict.fromkeys(v for v in values if v))


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
