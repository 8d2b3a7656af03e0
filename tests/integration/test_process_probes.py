"""A process without the gateway answers its orchestrator's probes beside GET /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pao.shared.runtime import Scope
from pao.shared.settings import Settings
from pao.stack.runtime import serve_metrics


class Database:
    """Stands in for the pool: answers SELECT 1, or fails the way an outage does."""

    def __init__(self) -> None:
        self.down = False

    async def fetchval(self, query: str) -> Any:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return 1


@pytest.fixture
async def process() -> AsyncIterator[tuple[str, Database, Scope]]:
    database = Database()
    settings = Settings(metrics_host="127.0.0.1", metrics_port=0)
    scope = Scope(settings, database, None, asyncio.Event())  # type: ignore[arg-type]
    metrics_url = await serve_metrics(scope, "pao-relay")
    try:
        yield metrics_url.removesuffix("/metrics"), database, scope
    finally:
        await scope.close()


async def answer(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_liveness_readiness_and_metrics_share_the_metrics_port(
    process: tuple[str, Database, Scope],
) -> None:
    base, _, _ = process
    assert await answer(f"{base}/health") == (200, {"status": "ok", "service": "pao-relay"})
    status, ready = await answer(f"{base}/health/ready")
    assert status == 200
    assert ready["status"] == "ready"
    assert {c["name"]: c["ok"] for c in ready["checks"]} == {"services": True, "database": True}
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as scrape:
        assert scrape.status == 200
        assert "pao_build_info" in await scrape.text()


async def test_a_database_outage_makes_the_process_unready_but_not_dead(
    process: tuple[str, Database, Scope],
) -> None:
    base, database, _ = process
    database.down = True
    status, ready = await answer(f"{base}/health/ready")
    assert status == 503
    assert ready["status"] == "not_ready"
    (failed,) = [c for c in ready["checks"] if not c["ok"]]
    assert failed == {
        "name": "database",
        "ok": False,
        "detail": "ConnectionRefusedError",
        "latency_ms": failed["latency_ms"],
    }
    assert (await answer(f"{base}/health"))[0] == 200  # a restart would not bring it back sooner


async def test_a_service_that_ended_makes_the_process_unready(
    process: tuple[str, Database, Scope],
) -> None:
    base, _, scope = process

    async def finished() -> None:
        return None

    scope.spawn("relay", finished())
    await asyncio.wait_for(asyncio.gather(*scope.tasks), timeout=5)
    status, ready = await answer(f"{base}/health/ready")
    assert status == 503
    services = next(c for c in ready["checks"] if c["name"] == "services")
    assert services["detail"] == "ended: relay"
