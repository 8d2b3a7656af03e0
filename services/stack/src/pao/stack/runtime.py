"""Runs PAO services in one process: all of them for `pao up`, one for `pao serve`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts, source_from_settings
from pao.catalog.follower import follow_catalog
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import SourceError
from pao.gateway.app import create_app
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.kafka import make_producer
from pao.shared.keystore import KeyStore
from pao.shared.relay import Relay
from pao.shared.settings import Settings

log = structlog.get_logger("pao.stack")

#: Services `pao serve` can run; `pao up` runs them all.
SERVICES: tuple[str, ...] = ("gateway", "relay")


@dataclass
class Running:
    """Addresses of what started, for the banner and stack.json."""

    gateway_url: str | None = None
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
    )
    running = Running()
    tasks: list[asyncio.Task[None]] = []
    cleanups: list[Callable[[], Awaitable[None]]] = []
    try:
        if "relay" in names:
            producer = make_producer(settings)
            await producer.start()
            cleanups.append(producer.stop)
            relay = Relay(
                pool,
                producer,
                name=settings.relay_name,
                batch_size=settings.relay_batch_size,
                poll_interval=settings.relay_poll_interval_ms / 1000,
            )
            if relay_from_start:
                # A fresh in-memory broker holds nothing: publish the whole history again so
                # topics are complete; consumers skip what they already applied.
                await pool.execute("DELETE FROM relay_checkpoints WHERE name = $1", relay.name)
            tasks.append(asyncio.create_task(relay.run(stop), name="relay"))
            running.services.append("relay")
        if "gateway" in names:
            parts = CatalogParts(source=source_from_settings(settings), store=EventStore(pool))
            await start_catalog(settings, parts, stop, tasks)
            app = create_app(settings, keys=keys, pool=pool, catalog_parts=parts)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
            await site.start()
            cleanups.append(runner.cleanup)
            host, port = runner.addresses[0][:2]
            running.gateway_url = f"http://{host}:{port}"
            running.services.append("gateway")
        if on_started is not None:
            await on_started(running)
        await _until_stopped_or_failed(stop, tasks)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        await pool.close()


async def start_catalog(
    settings: Settings, parts: CatalogParts, stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> None:
    """Load the served catalog from the store, refresh it from its source, then follow it."""
    await parts.view.catch_up(parts.store)
    if settings.catalog_refresh_on_start:
        try:
            result = await refresh_catalog(
                source=parts.source, store=parts.store, view=parts.view, actor="pao"
            )
            log.info(
                "catalog loaded",
                status=result.status,
                version=result.catalog_version,
                problems=len(result.problems),
            )
        except SourceError as exc:
            log.error("catalog source unavailable; serving the stored catalog", error=str(exc))
    tasks.append(
        asyncio.create_task(
            follow_catalog(settings, parts.store, parts.view, stop), name="catalog-follower"
        )
    )


async def _until_stopped_or_failed(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("service failed", service=task.get_name(), error=repr(task.exception()))
            raise task.exception()  # type: ignore[misc]
