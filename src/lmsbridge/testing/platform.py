"""What the platform stand-ins share: a real aiohttp server, a Bearer key and injected failures.

:class:`PlatformStandIn` serves the routes a subclass adds in :meth:`PlatformStandIn._routes`
and can fail on demand: the next requests (:meth:`~PlatformStandIn.fail_next`) or a seeded
share of them (:meth:`~PlatformStandIn.set_failure_rate`, with ``Retry-After: 0``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """An injected failure: ``status`` for the next ``times`` requests, with ``Retry-After`` if given."""

    status: int
    times: int
    retry_after: int | None
    message: str = "injected fault"

    @property
    def headers(self) -> dict[str, str] | None:
        """The ``Retry-After`` header the answer carries, if any."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


class PlatformStandIn:
    """A platform API in process, on a real socket (subclasses add the routes and the documents)."""

    def __init__(self, api_key: str, *, seed: int = 0) -> None:
        self._key = api_key
        self._assignments: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._rate = 0.0
        self._rate_statuses: tuple[int, ...] = (500, 429)
        self._chaos = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """Base URL of the running server (``""`` before :meth:`start`)."""
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving (``port=0`` picks a free port)."""
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._url = f"http://{host}:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # --- misbehaviour -------------------------------------------------------------------

    def fail_next(
        self, status: int, times: int = 1, retry_after: int | None = None, message: str = "injected fault"
    ) -> None:
        """Answer the next ``times`` authorised requests with ``status`` (and ``Retry-After`` if given),
        the error body's message ``message`` (a platform may quote the key it was sent)."""
        self._faults.append(Fault(status, times, retry_after, message))

    def set_failure_rate(self, rate: float, statuses: tuple[int, ...] = (500, 429), seed: int | None = None) -> None:
        """Fail this share of authorised requests (seeded), with one of ``statuses`` and ``Retry-After: 0``."""
        self._rate = rate
        self._rate_statuses = statuses
        if seed is not None:
            self._chaos = random.Random(seed)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self._key}"

    def _take_fault(self) -> Fault | None:
        """The failure this request meets, if any: a scripted one first, then the random share."""
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            return fault
        if self._rate and self._chaos.random() < self._rate:
            return Fault(self._chaos.choice(self._rate_statuses), 1, 0)
        return None
