"""The envelope every platform's body shares, and turning validation errors into 422 paths."""

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


class Envelope(Lenient):
    """``{"id", "type", "timestamp", "data"}``."""

    id: str | None = Field(None, min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=128)
    timestamp: UtcDatetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def load_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 ``malformed_json`` otherwise."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedRequest("the body is not valid JSON", code="malformed_json") from None
    if not isinstance(parsed, dict):
        raise MalformedRequest("the body must be a JSON object", code="malformed_json")
    return parsed


def validate(model: type[M], value: Any, *, prefix: str = "") -> M:
    """Validate ``value`` as ``model``; a failure is 422 with the JSON path of the first problem."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
        raise UnusableBody(f"{path or 'body'}: {first['msg']}", path=path or None) from None
