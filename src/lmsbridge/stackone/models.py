"""The parts of StackOne's responses lmsbridge reads; everything else is ignored.

Providers fill these loosely, so every field is optional and an unreadable timestamp
becomes ``None`` rather than failing a whole page of users.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidatorFunctionWrapHandler, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class LmsUser(_Model):
    """A user of the LMS behind one linked account (``LmsUser`` in the spec)."""

    id: str | None = None
    remote_id: str | None = None
    external_reference: str | None = None
    email: str | None = None
    name: str | None = None
    active: bool | str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("created_at", "updated_at", mode="wrap")
    @classmethod
    def _lenient_time(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> datetime | None:
        try:
            result: datetime | None = handler(value)
        except ValidationError:
            return None
        return result


class UsersPage(_Model):
    """One page of ``GET /unified/lms/users`` (``UsersPaginated``: ``data`` is required)."""

    next: str | None = None
    data: list[LmsUser]


class RowsPage(_Model):
    """One page of a list of assignments or completions, rows kept as received.

    ``data`` is required, as in the spec's ``*Paginated`` schemas: an error body or a page
    without ``data`` is not "nothing there", and must never license a create.
    """

    next: str | None = None
    data: list[dict[str, Any]]


class CreatedData(_Model):
    """``CreateResultDataApiModel``: the ids of what was created."""

    id: str | None = None
    remote_id: str | None = None


class CreateResult(_Model):
    """The answer to a create (``CreateResult``); only ``data`` matters."""

    data: CreatedData | None = None


class BatchResult(_Model):
    """The answer to ``POST /unified/lms/content/batch`` (``BatchResultApiModel``)."""

    message: str | None = None
    errors: list[list[str]] | None = None
