"""The one reader of ``Retry-After`` (RFC 9110, section 10.2.3) for every client lmsbridge has.

The header is either delta-seconds (``1*DIGIT``: ``120``) or an HTTP date
(``Fri, 31 Dec 1999 23:59:59 GMT``). Anything else is unreadable and gets the caller's
default: ``inf``, ``nan``, ``1e400``, ``-5``, ``1.5`` are not delta-seconds, so a far side
(or a proxy in between) cannot stop traffic for ever with a word. A delay that is readable
but long (``86400``) is the caller's to bound, with :func:`bounded`; a date in the past
means "now". Pure: no I/O, no logging; the clock comes in as ``now``.
"""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["bounded", "parse_retry_after", "retry_after_seconds"]

_MAX_DIGITS = 12  # 10**12 s is 31,000 years: longer is no different, and int() of 5,000 digits refuses


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or not one of its two forms.

    The result is finite and never negative. ``now`` (epoch seconds) is for HTTP dates.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text)) if len(text) <= _MAX_DIGITS else float(10**_MAX_DIGITS)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    try:
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_seconds(value: str | None, *, default: float, now: float | None = None) -> float:
    """:func:`parse_retry_after`, or ``default`` when the value is absent or unreadable."""
    parsed = parse_retry_after(value, now=now)
    return default if parsed is None else parsed


def bounded(seconds: float, cap: float) -> float:
    """``seconds`` no longer than ``cap`` (and a non-finite or negative value as ``cap`` or 0)."""
    if math.isnan(seconds):
        return cap
    return min(max(seconds, 0.0), cap)
