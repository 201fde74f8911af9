"""One root exception, with subclasses named for what they cause.

Two places translate these into actions, and only those two:

* ``lmsbridge.receiver.errors`` maps :class:`RejectRequest` (and :class:`BrokerUnavailable`)
  to an HTTP status and a JSON error body;
* ``lmsbridge.broker.outcome`` maps :class:`RetryLater`, :class:`RetryAfter`,
  :class:`InfrastructureFault`, :class:`ParkRecord`, :class:`PauseAccount` and
  :class:`DeadLetter` to ack, delayed retry, park, pause or dead-letter (and
  ``lmsbridge.broker.settle`` carries that out).

Messages never contain secrets: callers pass descriptions, never keys or signatures.
"""

from __future__ import annotations


class LmsbridgeError(Exception):
    """Root of every error lmsbridge raises on purpose."""


class ConfigError(LmsbridgeError):
    """The configuration is missing or invalid; start-up stops with one line naming the key."""


# --- receiver side: refuse the request -------------------------------------------------


class RejectRequest(LmsbridgeError):
    """Refuse a webhook request with a 4xx status and a stable error code."""

    status: int = 400
    type: str = "invalid_request"
    code: str = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.path = path


class MalformedRequest(RejectRequest):
    """400: the request is malformed (bad JSON, missing header)."""

    status = 400
    code = "malformed_request"


class SignatureRejected(RejectRequest):
    """401: the signature is missing, stale, from the future or does not match."""

    status = 401
    type = "authentication_error"
    code = "signature_mismatch"


class UnknownSource(RejectRequest):
    """404: no source is configured under this path."""

    status = 404
    type = "not_found"
    code = "unknown_source"


class BodyTooLarge(RejectRequest):
    """413: the body exceeds the configured limit."""

    status = 413
    code = "body_too_large"


class UnsupportedMediaType(RejectRequest):
    """415: the body is not JSON."""

    status = 415
    code = "unsupported_media_type"


class ExpectationFailed(RejectRequest):
    """417: an ``Expect`` other than ``100-continue``, which is all the receiver understands."""

    status = 417
    code = "unsupported_expectation"


class UnusableBody(RejectRequest):
    """422: valid JSON, but lacking what lmsbridge needs (``path`` names the problem)."""

    status = 422
    code = "invalid_body"


class BodyTimeout(RejectRequest):
    """408: the body did not arrive in time; the connection is closed."""

    status = 408
    code = "body_timeout"


class BrokerUnavailable(LmsbridgeError):
    """503: the broker is unreachable or did not confirm in time; the sender should retry."""

    code = "broker_unavailable"


class ReceiverBusy(LmsbridgeError):
    """503: as many request bodies as allowed are being read already; the sender should retry."""

    code = "busy"


# --- consumer side: decide what happens to the message ---------------------------------


class RetryLater(LmsbridgeError):
    """A transient fault outside lmsbridge (5xx, timeout, connection): back off and retry.

    Retried with backoff; dead-lettered once the record has been failing for longer than
    ``broker.max_retry_age``. Many of them on one account open its circuit breaker.
    """


class RetryListingFirst(RetryLater):
    """A create answered 5xx: StackOne or the LMS behind it failed, maybe after the LMS wrote it.

    Retried as any :class:`RetryLater`, but its write-ahead intent stays: the next attempt lists
    the person's assignments or completions before it creates again.
    """


class RetryAfter(RetryLater):
    """The far side asked us to wait (``Retry-After``): a 429 pauses the whole API key, a 408 only its record."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class RateLimited(RetryAfter):
    """StackOne's 429: the API key is over its limit; the rate limiter pauses the key for ``delay``,
    so a caller retrying through the limiter waits once, in the limiter, not again itself."""


class WriteUncertain(RetryAfter):
    """A create got 408 or timed out: it may have been written. List before creating again."""


class AlreadyExists(LmsbridgeError):
    """StackOne answered 409: the record exists, so the write counts as done."""


class LeaseBusy(LmsbridgeError):
    """Another consumer is syncing the same record right now; try again shortly (no attempt used)."""


class InfrastructureFault(LmsbridgeError):
    """Our own database or broker failed; retry without using up the record's attempts."""


class ParkRecord(LmsbridgeError):
    """The record cannot proceed until something outside changes (e.g. ``user_not_found``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PauseAccount(LmsbridgeError):
    """The StackOne account or API key is unusable (401/403/412): pause it, keep its messages."""

    def __init__(self, account: str, status: int, message: str) -> None:
        super().__init__(message)
        self.account = account
        self.status = status


class DeadLetter(LmsbridgeError):
    """Retrying cannot help (400/422/501, poison): dead-letter at once, with a reason."""

    def __init__(self, reason: str, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail


# --- reconciliation: a pass that cannot go on ------------------------------------------


class PlatformUnavailable(LmsbridgeError):
    """A platform's list API kept failing or refused the key: the reconcile pass stops where it got to."""


class MalformedPage(PlatformUnavailable):
    """A platform page is not the documented shape (``field`` names where): nothing from it is merged."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
