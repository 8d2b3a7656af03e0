"""Runs PAO services in one process: all of them for `pao up`, some for `pao serve`.

Each service wires itself in its own `bootstrap`; this module only composes them in one scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from pao.contracts.topics import ALL_TOPICS
from pao.fulfillment import bootstrap as fulfillment
from pao.gateway import bootstrap as gateway
from pao.notification import bootstrap as notification
from pao.request import bootstrap as request
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.kafka import ensure_topics
from pao.shared.keystore import KeyStore
from pao.shared.metrics import start_metrics_server
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
    #: where GET /metrics answers when PAO_METRICS_PORT is set
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
    pool = await create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        application_name="pao-" + "+".join(names),
        idle_in_transaction_timeout_ms=settings.db_idle_in_transaction_timeout_ms,
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
            running.metrics_url = await _serve_metrics(scope)
        running.services = [n for n in SERVICES if n in names]
        if on_started is not None:
            await on_started(running)
        await scope.until_stopped_or_failed()
    finally:
        await scope.close()
        await pool.close()


async def _serve_metrics(scope: Scope) -> str:
    """GET /metrics on PAO_METRICS_PORT, for scrapers of a process without the gateway."""
    settings = scope.settings
    assert settings.metrics_port is not None
    runner = await start_metrics_server(settings.metrics_host, settings.metrics_port)
    scope.cleanups.append(runner.cleanup)
    host, port = runner.addresses[0][:2]
    log.info("metrics served", url=f"http://{host}:{port}/metrics")
    return f"http://{host}:{port}/metrics"


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
