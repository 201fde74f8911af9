"""The canonical assignment event: what every platform adapter produces and the queue carries.

It also holds what the database can store (:data:`MAX_ID`, :data:`MAX_REFERENCE`,
:data:`MAX_EMAIL`; text without NUL or control characters; datetimes that still exist in UTC),
as annotated types the platform adapters use for the body fields these come from, so a body
breaking a limit is refused with a 422 naming its field before the 202, and a queued event
breaking one fails to decode in the worker instead of looping on the database's refusal.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_ID = 255
"""Ids: ``inbox.message_id`` (and the AMQP message id, in UTF-8 bytes), ``records.assignment_id``."""
MAX_REFERENCE = 512
"""``records.learning_object_ref`` and ``content.external_reference``."""
MAX_EMAIL = 320
"""``records.person_key`` and ``directory.email``: the e-mail's :func:`email_key`."""

# C0 controls but tab, newline and carriage return, and DEL: never meaningful in a title or a name.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(value: str) -> str:
    """An id or a reference: printable characters only (as message ids from headers must be)."""
    if not value.isprintable():
        raise ValueError("must contain only printable characters")
    return value


def text(value: str) -> str:
    """A title or a name: no NUL or control characters (tab and line breaks are fine)."""
    if _CONTROL.search(value):
        raise ValueError("must not contain NUL or control characters")
    return value


def short_bytes(value: str) -> str:
    """A message id: at most :data:`MAX_ID` bytes of UTF-8 (an AMQP short string)."""
    if len(value.encode()) > MAX_ID:
        raise ValueError(f"must be at most {MAX_ID} bytes of UTF-8")
    return value


def stripped(value: Any) -> Any:
    """A string without the white space around it (anything else as it is, for the type to refuse)."""
    return value.strip() if isinstance(value, str) else value


# Characters that never show and never tell two mailboxes apart: soft hyphen, zero-width space,
# word joiner, byte-order mark (what a copy from a document or a spreadsheet leaves in).
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u2060\ufeff"))
# IDNA's label separators besides ".": ideographic, full-width and half-width full stops.
_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))


def email_key(value: str) -> str:
    """The key one person is known by in every event, platform and LMS user list: an e-mail
    written several ways gives one key.

    White space around it and invisible characters in it are dropped, and it is lower-cased in
    Unicode's composed form (NFC: an "é" sent as "e" and a combining accent is the "é" another
    event sends). The domain is compared as DNS compares it (IDNA, UTS #46): compatibility forms
    folded (full-width letters, ideographic full stops) and ASCII-encoded labels
    (``xn--bcher-kva``) read as the Unicode they encode (``bücher``). The local part keeps its
    characters: mailboxes may differ there by width or by "ß" and "ss", so only case is folded.
    A key is its own key.
    """
    lowered = value.strip().lower()
    if lowered.isascii() and "xn--" not in lowered:
        return lowered  # nothing to fold: 77 ns, not 2.2 us (several calls an event: 2.5 % of a worker)
    return _folded(value)


def _folded(value: str) -> str:
    """:func:`email_key` the long way, for any input (the fast path must give exactly this)."""
    # Invisible characters first: white space they hid is white space around the e-mail.
    local, at, domain = value.translate(_INVISIBLE).strip().rpartition("@")
    if not at:
        return unicodedata.normalize("NFC", domain.lower())
    folded = _fold_domain(domain)
    domain = ".".join(map(_unicode_label, folded.split(".")))
    if domain != folded:  # a decoded label may hold what folding drops: an invisible character, "。"
        folded = _fold_domain(domain.translate(_INVISIBLE))
    # Stripped again: a decoded label may end in white space (no-break space, NFKC's " ").
    return f"{unicodedata.normalize('NFC', local.lower())}@{folded}".strip()


def spellings(key: str) -> list[str]:
    """How an LMS may hold the e-mail of ``key`` when not as the key itself, most likely first: the
    domain ASCII-encoded (``hans@xn--bcher-kva.example`` for ``hans@bücher.example``), the key in
    Unicode's decomposed form (NFD), then a decomposed local part at the encoded domain. At most
    three; none for an ASCII key.

    An LMS's e-mail filter may compare exactly, and the key (composed, the domain decoded) is not
    how the platform and the LMS both wrote the e-mail when both wrote it encoded or decomposed.
    """
    if key.isascii():
        return []
    local, at, domain = key.rpartition("@")
    found = [unicodedata.normalize("NFD", key)]
    if at:
        encoded = ".".join(label if label.isascii() else _ascii_label(label) for label in domain.split("."))
        found = [f"{local}@{encoded}", *found, f"{unicodedata.normalize('NFD', local)}@{encoded}"]
    return [spelling for spelling in dict.fromkeys(found) if spelling != key]


def _ascii_label(label: str) -> str:
    """A Unicode domain label as its ``xn--`` label (Punycode, as IDNA 2008 encodes it)."""
    return "xn--" + label.encode("punycode").decode("ascii")


def rekeyed(stored: str) -> str | None:
    """The key a key stored by an earlier :func:`email_key` has now, or None if it is unchanged.

    A key stored by the version before IDNA 2008 labels were decoded, keyed again, is the key the
    same e-mail gets now (so a migration needs no e-mail to re-key). Those that change: keys holding
    an ``xn--`` label that IDNA 2003 refused but decodes ("ß", a final sigma, a soft hyphen, an
    upper-case letter); keys whose decoded label holds a full stop other than "." (``a。b``); and,
    in the directory only (an event with white space in its e-mail is refused), keys starting or
    ending with white space an invisible character hid (``"\\ufeff jane@..."`` stored as
    ``" jane@..."``).
    """
    key = email_key(stored)
    return None if key == stored else key


def _fold_domain(domain: str) -> str:
    """A domain with compatibility forms folded (full-width letters and full stops), lower-cased."""
    return unicodedata.normalize("NFKC", domain).translate(_DOTS).lower()


def _unicode_label(label: str) -> str:
    """A domain label as Unicode: an ``xn--`` label decoded as IDNA 2008 and UTS #46 read it.

    Plain Punycode, not Python's ``idna`` codec: that is IDNA 2003, which maps "ß" to "ss" and a
    final sigma to a sigma, and so refuses ``xn--strae-oqa`` (straße) as registries and browsers
    encode it. A label that does not decode, decodes to ASCII only or is not how its Unicode
    encodes (no A-label names these) is kept as sent.
    """
    if not label.startswith("xn--"):
        return label
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        if decoded.isascii() or decoded.encode("punycode") != label[4:].encode("ascii"):
            return label
    except UnicodeError:
        return label
    return decoded


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
"""Something, one "@", something, without white space: what the platforms' schemas ask of an e-mail."""
_EMAIL = re.compile(EMAIL_PATTERN)


def email(value: str) -> str:
    """An e-mail whose :func:`email_key` is still an e-mail (:data:`EMAIL_PATTERN`: ``"bob@\\u200b"``
    keys to ``"bob@"``) and fits :data:`MAX_EMAIL` (some characters grow lower-cased)."""
    text(value)
    key = email_key(value)
    if len(key) > MAX_EMAIL:
        raise ValueError(f"must be at most {MAX_EMAIL} characters once lower-cased")
    if not _EMAIL.fullmatch(key):
        raise ValueError("must be an e-mail once invisible characters are dropped and the domain folded")
    return value


def storable(value: datetime) -> datetime:
    """A datetime that still exists once converted to UTC (``9999-12-31T23:59:59-12:00`` does not)."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID), AfterValidator(printable)]
MessageId = Annotated[
    str, Field(min_length=1, max_length=MAX_ID), AfterValidator(printable), AfterValidator(short_bytes)
]
Reference = Annotated[str, Field(min_length=1, max_length=MAX_REFERENCE), AfterValidator(printable)]
Text = Annotated[str, AfterValidator(text)]
Email = Annotated[str, BeforeValidator(stripped), Field(min_length=3), AfterValidator(email)]
"""An e-mail, white space around it dropped before it is checked (" jane@acme.example " is Jane)."""
Moment = Annotated[datetime, AfterValidator(storable)]

EventType = Literal["assignment.created", "assignment.completed"]
ASSIGNMENT_CREATED: EventType = "assignment.created"
ASSIGNMENT_COMPLETED: EventType = "assignment.completed"


class LearningObject(BaseModel):
    """The training as the LMS knows it: a stable external reference and a title."""

    model_config = ConfigDict(frozen=True)

    external_reference: Reference
    title: Text


class PersonProgress(BaseModel):
    """One person's side of an assignment, as the platform reported it."""

    model_config = ConfigDict(frozen=True)

    email: Email
    name: Text | None = None
    platform_user_id: Identifier | None = None
    progress: float | None = Field(None, ge=0, le=100)
    started: bool = False
    """Begun, by the platform's word, though it gives no percentage (Exec's ``in_progress``)."""
    completed_at: Moment | None = None
    passed: bool | None = None
    score: float | None = None

    @property
    def person_key(self) -> str:
        """The key a person is known by across events: the e-mail's :func:`email_key`."""
        return email_key(self.email)


class AssignmentEvent(BaseModel):
    """One accepted webhook, normalised. ``people`` is empty until an assignment is expanded."""

    model_config = ConfigDict(frozen=True)

    message_id: MessageId
    source: str
    platform: str
    type: EventType
    occurred_at: Moment
    received_at: Moment
    correlation_id: str
    assignment_id: Identifier
    learning_object: LearningObject
    assigned_at: Moment | None = None
    due_date: Moment | None = None
    people: tuple[PersonProgress, ...] = ()
    needs_expansion: bool = False
