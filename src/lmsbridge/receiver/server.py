"""How the receiver is served: aiohttp's HTTP protocol, answering its own parse errors in our shape.

aiohttp refuses a request it cannot parse (a bad ``Content-Length``, a control character in a
header) before any application code runs, with a ``text/plain`` body that quotes the
offending bytes. :class:`ReceiverRunner` serves the app with a protocol whose
``handle_error`` answers the receiver's JSON error shape instead and echoes nothing. aiohttp
offers no public hook for this: the protocol is made by ``web.Server.__call__``, and the
runner's ``_make_server`` builds that server, so both are overridden here (a test sends such
requests over a raw socket, so an aiohttp upgrade that moves them fails loudly). The same goes
for the refusal aiohttp raises before the app's middlewares run (an ``Expect`` it does not
understand): the server's handler answers it in our shape too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from lmsbridge.logs import get_logger
from lmsbridge.receiver.errors import from_exception, malformed_http

log = get_logger(__name__)

RETRY_AFTER_KEY = web.AppKey("retry_after", int)
Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class _JsonErrorsProtocol(RequestHandler):
    """aiohttp's protocol, but its own refusals are JSON errors that quote nothing."""

    def __init__(self, manager: web.Server, *, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._retry_after = retry_after

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The JSON error for ``status``; logs the exception's type only (its message quotes the request)."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; the connection is broken")
        log.info("http.malformed", status=status, error_type=type(exc).__name__ if exc else None)
        response = malformed_http(status, retry_after=self._retry_after)
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    """aiohttp's server, making :class:`_JsonErrorsProtocol` connections."""

    def __init__(self, handler: Any, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._retry_after = retry_after

    def __call__(self) -> RequestHandler:
        return _JsonErrorsProtocol(self, loop=self._loop, retry_after=self._retry_after, **self._kwargs)


def _json_refusals(handler: Handler, retry_after: int) -> Handler:
    """``handler``, with the refusals aiohttp raises before the app's middlewares run (an ``Expect``
    it does not understand, on a route without the receiver's own expect handler) in our shape."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            log.info("http.refused", status=exc.status, path=request.path)
            return from_exception(exc, retry_after=retry_after)

    return handle


class ReceiverRunner(web.AppRunner):
    """``web.AppRunner`` for the receiver app: the same, with JSON errors from the HTTP parser."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        retry_after = self.app.get(RETRY_AFTER_KEY, 5)
        return _JsonErrorsServer(
            _json_refusals(made.request_handler, retry_after),
            retry_after=retry_after,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
