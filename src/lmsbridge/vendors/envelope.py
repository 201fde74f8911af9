"""The envelope every platform's body shares, and turning validation errors into 422 paths.

``{"id", "type", "timestamp", "data"}``: only ``type`` (and ``id`` when the signature scheme
carries no message id) is read before deciding whether lmsbridge handles the event, so an
ignored type is acknowledged however the rest of its body looks. A handled type needs an
object ``data``; its ``timestamp`` (when the event happened; one without a zone is taken as
UTC) may be absent, and then the event is taken to have happened when it was received.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from lmsbridge.domain.events import MessageId, storable
from lmsbridge.errors import MalformedRequest, UnusableBody

HANDLED = ("assignment.created", "assignment.completed")

M = TypeVar("M", bound=BaseModel)


class Lenient(BaseModel):
    """Platform models accept unknown fields (platforms add fields) and are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


MILLISECONDS_FROM = 1e12
"""An epoch number at least this large is in milliseconds (any date since 2001-09-09), a smaller one
in seconds (any date up to the year 33658): so ``253402300799``, 9999-12-31 in seconds (a common
"no deadline"), stays itself. (pydantic's own line, 2e10, read it as milliseconds: 1978.)"""


def _epoch(value: Any) -> Any:
    """An epoch number (or a string of one) as an aware UTC datetime; anything else as it is."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric and not (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        return value
    number = float(value)
    seconds = number / 1000 if abs(number) >= MILLISECONDS_FROM else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("is not a time that can be held (seconds or milliseconds since 1970)") from None


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")

UtcDatetime = Annotated[datetime, BeforeValidator(_epoch), AfterValidator(_aware), AfterValidator(storable)]
"""A timestamp; one without a zone is taken as UTC; it must still exist once converted to UTC; an
epoch number is seconds, or milliseconds from :data:`MILLISECONDS_FROM`."""

_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def _deadline(value: Any) -> Any:
    """A date alone (``"2026-06-12"``) as the end of that day in UTC, ``23:59:59Z``: the platforms'
    own deadlines end their day so (spec 003's examples), and due on that date means until it ends.
    Read as a timestamp (pydantic's way), it was midnight at the day's start, a day early in the LMS."""
    if isinstance(value, str) and (day := _DATE.fullmatch(value)):
        try:
            return datetime(int(day[1]), int(day[2]), int(day[3]), 23, 59, 59, tzinfo=UTC)
        except ValueError:
            return value  # no such day: pydantic's own message says so
    return _epoch(value)


UtcDeadline = Annotated[datetime, BeforeValidator(_deadline), AfterValidator(_aware), AfterValidator(storable)]
"""A deadline: a :data:`UtcDatetime`, except that a date alone is the end of that day (UTC)."""


class Head(Lenient):
    """What deciding "handled or ignored" needs: ``id`` and ``type``."""

    id: MessageId | None = None
    type: str = Field(min_length=1, max_length=128)


class Envelope(Head):
    """A handled event's envelope."""

    timestamp: UtcDatetime | None = None
    data: dict[str, Any]


def load_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 ``malformed_json`` otherwise."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        path = _overflowing_number(body)
        if path is not None:
            # Well-formed JSON (orjson refuses only what a double cannot hold): the field is the problem.
            raise UnusableBody(f"{path}: number is too large", code="invalid_body", path=path) from None
        raise MalformedRequest("the body is not valid JSON", code="malformed_json") from None
    if not isinstance(parsed, dict):
        raise MalformedRequest("the body must be a JSON object", code="malformed_json")
    return parsed


class _Overflow:
    """Stands for a number a double cannot hold, so its path can be found."""


_OVERFLOW = _Overflow()


def _float(literal: str) -> float | _Overflow:
    value = float(literal)
    return value if math.isfinite(value) else _OVERFLOW


def _int(literal: str) -> int | _Overflow:
    # orjson reads integers beyond 64 bits as doubles; past ~1.8e308 (or int()'s digit limit) it refuses.
    if len(literal) > 400:
        return _OVERFLOW
    value = int(literal)
    try:
        float(value)
    except OverflowError:
        return _OVERFLOW
    return value


def _not_json(literal: str) -> None:
    raise ValueError(f"{literal} is not JSON")


def _overflowing_number(body: bytes) -> str | None:
    """Where a JSON body that orjson refused holds a number too large for a double, if that is why."""
    try:
        document = json.loads(body, parse_float=_float, parse_int=_int, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    return _find(document, ())


def _find(value: Any, loc: tuple[int | str, ...]) -> str | None:
    if value is _OVERFLOW:
        return json_path(loc) or "body"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _find(item, (*loc, key))
        if found is not None:
            return found
    return None


def json_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """``("data", "items", 0, "email")`` as ``data.items[0].email``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def validate(model: type[M], value: Any, *, prefix: str = "") -> M:
    """Validate ``value`` as ``model``; a failure is 422 ``invalid_body`` naming the first problem's path."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = json_path(first["loc"], prefix)
        raise UnusableBody(f"{path or 'body'}: {first['msg']}", code="invalid_body", path=path or None) from None


T = TypeVar("T")


def build(make: Callable[[], T], paths: dict[str, str]) -> T:
    """Build a domain object; a domain limit it breaks is 422 naming the body field it came from.

    ``paths`` maps the domain's field paths (``learning_object.external_reference``) to the
    body's; the adapters' own models check the same limits first, so this is the safety net.
    """
    try:
        return make()
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = json_path(tuple(part for part in first["loc"] if not isinstance(part, int)))
        path = paths.get(loc)
        raise UnusableBody(f"{path or loc}: {first['msg']}", code="invalid_body", path=path) from None
