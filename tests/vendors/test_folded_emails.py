"""An e-mail is checked as it will be keyed: one that is no e-mail once folded is 422, never a 202.

The platforms' pattern (something, one "@", something, no white space) was checked on the e-mail
as sent, never on its :func:`~lmsbridge.domain.events.email_key`. ``"bob@\\u200b"`` passed it,
was accepted with 202 and stored for person ``"bob@"``: parked as ``user_not_found`` for good,
and every such body for the learning object merged into that one record.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from lmsbridge.domain.events import email_key
from lmsbridge.errors import UnusableBody
from lmsbridge.testing.webhooks import exec_assignment, exec_event, limeplate_assignment, limeplate_completed
from lmsbridge.vendors import parse_event

RECEIVED = datetime(2026, 5, 29, 9, 30, tzinfo=UTC)

# (as sent, its key): each passes the pattern as sent, none once folded.
NO_EMAIL_ONCE_FOLDED = [
    ("bob@\u200b", "bob@"),  # the domain is only a zero-width space
    ("\u00ad@acme.example", "@acme.example"),  # the local part is only a soft hyphen
    ("\u200b@\u200b", "@"),  # nothing at all
    ("bob@acme\uff20example.com", "bob@acme@example.com"),  # a full-width at sign: two "@"
]


def _body(platform: str, email: str) -> bytes:
    if platform == "exec":
        return orjson.dumps(exec_event("assignment.created", exec_assignment("as-1", email)))
    return orjson.dumps(limeplate_completed(limeplate_assignment("asg-1"), email, event_id="evt_1"))


def _parse(platform: str, email: str) -> object:
    return parse_event(
        platform, _body(platform, email), source="s", message_id="m-1", received_at=RECEIVED, correlation_id="c"
    )


@pytest.mark.parametrize("platform", ["exec", "limeplate"])
@pytest.mark.parametrize(("sent", "key"), NO_EMAIL_ONCE_FOLDED, ids=ascii)
def test_an_email_that_is_no_email_once_folded_is_refused_with_422(platform: str, sent: str, key: str) -> None:
    """An e-mail that passes the pattern only through characters ``email_key`` drops or folds is
    refused as its key would be: 422 ``invalid_body`` at ``data.user.email``."""
    assert email_key(sent) == key
    with pytest.raises(UnusableBody) as info:
        _parse(platform, sent)
    assert (info.value.status, info.value.code, info.value.path) == (422, "invalid_body", "data.user.email")


@pytest.mark.parametrize("platform", ["exec", "limeplate"])
@pytest.mark.parametrize(
    "sent", ["ana.lima\u200b@acme.example", "kenji@\uff41\uff43\uff4d\uff45\u3002example", "hans@xn--bcher-kva.example"]
)
def test_an_email_that_folds_to_an_email_is_accepted(platform: str, sent: str) -> None:
    """Invisible characters, a full-width or an IDNA-encoded domain around a real e-mail still pass."""
    assert _parse(platform, sent) is not None
