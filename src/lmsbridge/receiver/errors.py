"""The one map from errors to HTTP status and the JSON error body ``{"error": {type, code, message}}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from lmsbridge.errors import BrokerUnavailable, ReceiverBusy, RejectRequest


def error_response(
    status: int,
    type_: str,
    code: str,
    message: str,
    *,
    path: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error response in the receiver's one error shape."""
    error: dict[str, Any] = {"type": type_, "code": code, "message": message}
    if path is not None:
        error["path"] = path
    return web.Response(
        status=status, body=orjson.dumps({"error": error}), content_type="application/json", headers=headers
    )


def from_exception(exc: BaseException, *, retry_after: int) -> web.Response:
    """Map any exception raised while handling a request to its response (never a 500)."""
    if isinstance(exc, RejectRequest):
        return error_response(exc.status, exc.type, exc.code, exc.message, path=exc.path)
    if isinstance(exc, ReceiverBusy):
        return error_response(
            503,
            "unavailable",
            exc.code,
            "too many requests are being received at once; retry later",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, BrokerUnavailable):
        return error_response(
            503,
            "unavailable",
            exc.code,
            "the event could not be queued; retry later",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, web.HTTPException):
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
            400: "malformed_request",
            417: "unsupported_expectation",
        }
        code = codes.get(exc.status, f"http_{exc.status}")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, "invalid_request", code, exc.reason, headers=headers)
    # A bug must not become a 500: 503 tells the platform to retry, and nothing was queued.
    return error_response(
        503,
        "internal_error",
        "internal_error",
        "internal error; retry later",
        headers={"Retry-After": str(retry_after)},
    )


def malformed_http(status: int, *, retry_after: int) -> web.Response:
    """aiohttp's own refusal of a request it could not parse, in the one error shape.

    Echoes nothing of the request: the parser's message quotes the offending bytes.
    """
    if status >= 500:
        return from_exception(RuntimeError("outside the application"), retry_after=retry_after)
    code = "body_too_large" if status == 413 else "malformed_http"
    return error_response(status, "invalid_request", code, "the request is not valid HTTP/1.1")
