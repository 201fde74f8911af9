"""The envelope every platform's body shares, and turning validation errors into 422 paths.

``{"id", "type", "timestamp", "data"}``: only ``type`` (and ``id`` when the signature scheme
carries no message id) is read before deciding whether lmsbridge handles the event, so an
ignored type is acknowledged however the rest of its body looks. A handled type needs an
object ``data``; its ``timestamp`` (when the event happened; one without a zone is taken as
UTC) may be absent, and then the event is taken to have happened when it was received.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from lmsbridge.errors import MalformedRequest, UnusableBody

HANDLED = ("assignment.created", "assignment.completed")

M = TypeVar("M", bound=BaseModel)


class Lenient(BaseModel):
    """Platform models accept unknown fields (platforms add fields) and are immutable."""

    model_config = ConfigDict(extra="ignore", frozen=True)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]
"""A timestamp; one without a zone is taken as UTC."""


def _short(value: str) -> str:
    # The id becomes the AMQP message_id, a short string of at most 255 bytes.
    if len(value.encode()) > 255:
        raise ValueError("must be at most 255 bytes of UTF-8")
    return value


MessageId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_short)]


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
        raise MalformedRequest("the body is not valid JSON", code="malformed_json") from None
    if not isinstance(parsed, dict):
        raise MalformedRequest("the body must be a JSON object", code="malformed_json")
    return parsed


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
