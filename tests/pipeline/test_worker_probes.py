"""A worker running alone answers HTTP probes on its metrics port, so an orchestrator need not exec."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from lmsbridge.runtime import Runtime
from tests.pipeline.conftest import SettingsFactory
from tests.pipeline.test_resilience import free_port


async def test_a_lone_worker_serves_healthz_readyz_and_metrics_on_its_metrics_port(
    make_settings: SettingsFactory, start_runtime: Callable[..., Awaitable[Runtime]]
) -> None:
    """`lmsbridge worker` (no receiver): /healthz 200, /readyz 200 while broker and database answer and 503
    once it is shutting down, /metrics in Prometheus' text format."""
    port = free_port()
    runtime = await start_runtime(make_settings(worker={"metrics_port": port}), receiver=False)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
            assert await response.json() == {"ready": True}
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert "lmsbridge_events_total" in await response.text()
        runtime._stopping = True  # the first thing stop() does; the server itself closes later in stop()
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False}
        runtime._stopping = False
