"""What a platform reader hands the pass: a batch of canonical events read in one go."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from lmsbridge.domain import AssignmentEvent
from lmsbridge.errors import MalformedPage, RejectRequest
from lmsbridge.vendors.envelope import validate

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Batch:
    """Events read together (one Exec page, one assignment's members), and what was learnt on the way.

    ``events`` carry every person the platform listed; the pass keeps those who drifted.
    """

    where: str
    events: list[AssignmentEvent] = field(default_factory=list)
    assignments: int = 0  # assignments read
    total: int | None = None  # assignments the platform holds (for progress), when known
    in_step: int = 0  # records known to be in step without reading them (unchanged aggregates)
    skipped_inactive: int = 0
    detail: bool = False  # one per-assignment call was made
    snapshot: tuple[str, int, int] | None = None  # (assignment, total, completed) to remember once queued


def parse(model: type[M], value: object, where: str, *, prefix: str = "") -> M:
    """Validate a platform document; a shape that is not the documented one names the field."""
    try:
        return validate(model, value, prefix=prefix)
    except RejectRequest as exc:
        field_name = exc.path or prefix or "(body)"
        raise MalformedPage(f"{where}: malformed ({exc.message})", field=field_name) from None
