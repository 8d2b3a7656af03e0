"""Runs PAO services in one process: all of them for `pao up`, some for `pao serve`.

Each service wires itself in its own `bootstrap`; this module only composes them in one scope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from pao.contracts.health import ComponentCheck, Health, Readiness
from pao.contracts.topics import ALL_TOPICS
from pao.fulfillment import bootstrap as fulfillment
from pao.gateway import bootstrap as gateway
from pao.notification import bootstrap as notification
from pao.request import bootstrap as request
from pao.shared.database import create_pool
from pao.shared.database_access import DatabaseAccess
from pao.shared.eventstore import EventStore
from pao.shared.kafka import ensure_topics
from pao.shared.keystore import KeyStore
from pao.shared.metrics import exposition
from pao.shared.relay import Relay
from pao.shared.runtime import Scope
from pao.shared.settings import Settings

log = structlog.get_logger("pao.stack")

#: Services `pao serve` can run; `pao up` runs them all.
SERVICES: tuple[str, ...] = (
    "gateway",
    "relay",
    "projector",
    "request",
    "fulfillment",
    "notification",
)

#: Every package holding migrations, in the order they apply.
MIGRATIONS: tuple[str, ...] = (
    "pao.shared.migrations",
    request.MIGRATIONS,
    fulfillment.MIGRATIONS,
    notification.MIGRATIONS,
    gateway.MIGRATIONS,
)


@dataclass
class Running:
    """Addresses of what started, for the banner and stack.json."""

    gateway_url: str | None = None
    #: where GET /metrics answers when PAO_METRICS_PORT is set (/health and /health/ready beside)
    metrics_url: str | None = None
    services: list[str] = field(default_factory=list)


async def run_services(
    settings: Settings,
    names: Sequence[str],
    stop: asyncio.Event,
    *,
    keys: KeyStore,
    relay_from_start: bool = False,
    on_started: Callable[[Running], Awaitable[None]] | None = None,
) -> None:
    """Start the named services, call `on_started`, run until `stop` is set, then stop them."""
    if not settings.database_url:
        raise RuntimeError("PAO_DATABASE_URL is not set")
    application_name = "pao-" + "+".join(names)
    pool = await create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        application_name=application_name,
        idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
        access=DatabaseAccess.from_settings(settings, settings.database_url),
    )
    scope = Scope(settings, pool, EventStore(pool), stop)
    running = Running()
    try:
        if set(names) & {"relay", "request", "fulfillment", "notification"}:
            await ensure_topics(settings, ALL_TOPICS)  # consumers need their partitions
        if "relay" in names:
            await _start_relay(scope, relay_from_start)
        if "projector" in names:
            await request.start_projector(scope)
        if "request" in names:
            await request.start_process_manager(scope)
        if "fulfillment" in names:
            await fulfillment.start(scope)
        if "notification" in names:
            await notification.start(scope)
        if "gateway" in names:
            running.gateway_url = await gateway.start(scope, keys)
        if settings.metrics_port is not None:
            running.metrics_url = await serve_metrics(scope, application_name)
        running.services = [n for n in SERVICES if n in names]
        if on_started is not None:
            await on_started(running)
        await scope.until_stopped_or_failed()
    finally:
        await scope.close()
        await pool.close()


#: How long the readiness probe waits for the database.
READY_TIMEOUT = 2.0
_SCOPE = web.AppKey("scope", Scope)
_PROCESS = web.AppKey("process", str)


async def serve_metrics(scope: Scope, process: str) -> str:
    """GET /metrics on PAO_METRICS_PORT, for scrapers of a process without the gateway, and
    beside it the probes an orchestrator asks: /health (alive) and /health/ready."""
    settings = scope.settings
    assert settings.metrics_port is not None
    app = web.Application()
    app[_SCOPE] = scope
    app[_PROCESS] = process
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _alive)
    app.router.add_get("/health/ready", _ready)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(
        runner, settings.metrics_host, settings.metrics_port, reuse_address=True
    ).start()
    scope.cleanups.append(runner.cleanup)
    host, port = runner.addresses[0][:2]
    log.info("metrics served", url=f"http://{host}:{port}/metrics")
    return f"http://{host}:{port}/metrics"


async def _metrics(_: web.Request) -> web.Response:
    return exposition()


async def _alive(request: web.Request) -> web.Response:
    """The process answers. Deliberately no dependency: a database outage is waited out by the
    services themselves, and restarting the process would not end it sooner."""
    return web.json_response(Health(service=request.app[_PROCESS]).model_dump())


async def _ready(request: web.Request) -> web.Response:
    """200 while the services run and the database answers, else 503 naming what does not."""
    scope = request.app[_SCOPE]
    ended = [t.get_name() for t in scope.tasks if t.done()]
    checks = [
        ComponentCheck(
            name="services",
            ok=not ended,
            detail="ended: " + ", ".join(ended) if ended else "running",
        ),
        await _database_check(scope),
    ]
    ok = all(c.ok for c in checks)
    body = Readiness(status="ready" if ok else "not_ready", checks=checks)
    return web.json_response(body.model_dump(), status=200 if ok else 503)


async def _database_check(scope: Scope) -> ComponentCheck:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await scope.pool.fetchval("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - readiness reports a failure, it does not raise
        detail = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        ok = False
    else:
        detail, ok = "ok", True
    latency = round((time.perf_counter() - started) * 1000, 1)
    return ComponentCheck(name="database", ok=ok, detail=detail, latency_ms=latency)


async def _start_relay(scope: Scope, from_start: bool) -> None:
    relay = Relay(
        scope.pool,
        await scope.producer(),
        name=scope.settings.relay_name,
        batch_size=scope.settings.relay_batch_size,
        poll_interval=scope.settings.relay_poll_interval_ms / 1000,
        ensure_topics=lambda: ensure_topics(scope.settings, ALL_TOPICS),
    )
    if from_start:
        # A fresh in-memory broker holds nothing: publish the whole history again so topics
        # are complete; consumers find their logs changed and skip what they already applied.
        await scope.pool.execute("DELETE FROM relay_checkpoints WHERE name = $1", relay.name)
    scope.spawn("relay", relay.run(scope.stop))
