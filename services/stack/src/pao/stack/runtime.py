"""Runs PAO services in one process: all of them for `pao up`, one for `pao serve`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import structlog
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts, source_from_settings
from pao.catalog.follower import follow_catalog
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import DirectorySource, GitSource, SourceError
from pao.contracts.topics import ALL_TOPICS, topic_for_category
from pao.fulfillment import scheduling
from pao.fulfillment.executors import JiraExecutor, JiraSettings, RestExecutor, TerraformExecutor
from pao.fulfillment.jira import JiraClient
from pao.fulfillment.terraform import TerraformRunner
from pao.fulfillment.worker import Parts, Worker
from pao.gateway.app import create_app
from pao.request import process
from pao.request.projection import Projector
from pao.request.states import RequestStates
from pao.shared.consumer import EventConsumer
from pao.shared.database import create_pool
from pao.shared.environments import environments, system_scope
from pao.shared.eventstore import EventStore
from pao.shared.kafka import ensure_topics, make_producer
from pao.shared.keystore import KeyStore
from pao.shared.lifecycle import leadership
from pao.shared.relay import Relay
from pao.shared.secrets import secret_provider
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
    "pao.request.migrations",
    "pao.fulfillment.migrations",
    "pao.notification.migrations",
)

REQUEST_TOPIC = topic_for_category("request")


@dataclass
class Running:
    """Addresses of what started, for the banner and stack.json."""

    gateway_url: str | None = None
    services: list[str] = field(default_factory=list)


@dataclass
class _Scope:
    """What the services of one process share, and how to stop them."""

    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _producer: object | None = None

    def spawn(self, name: str, coroutine: Awaitable[None]) -> None:
        self.tasks.append(asyncio.create_task(coroutine, name=name))  # type: ignore[arg-type]

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self.cleanups.append(self._session.close)
        return self._session

    async def producer(self):
        if self._producer is None:
            producer = make_producer(self.settings)
            await producer.start()
            self.cleanups.append(producer.stop)
            self._producer = producer
        return self._producer


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
    scope = _Scope(settings, pool, EventStore(pool), stop)
    running = Running()
    try:
        if set(names) & {"relay", "request", "fulfillment", "notification"}:
            await ensure_topics(settings, ALL_TOPICS)  # consumers need their partitions
        if "relay" in names:
            await _start_relay(scope, relay_from_start)
        if "projector" in names:
            scope.spawn("projector", Projector(pool).run(stop))
        if "request" in names:
            await _start_consumer(
                scope, process.CONSUMER, process.on_action_event, process.REACTS_TO
            )
        if "fulfillment" in names:
            await _start_fulfillment(scope)
        if "notification" in names:
            await _start_notification(scope)
        if "gateway" in names:
            running.gateway_url = await _start_gateway(scope, keys)
        running.services = [n for n in SERVICES if n in names]
        if on_started is not None:
            await on_started(running)
        await _until_stopped_or_failed(stop, scope.tasks)
    finally:
        stop.set()
        for task in scope.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        for cleanup in reversed(scope.cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        await pool.close()


async def _start_relay(scope: _Scope, from_start: bool) -> None:
    relay = Relay(
        scope.pool,
        await scope.producer(),
        name=scope.settings.relay_name,
        batch_size=scope.settings.relay_batch_size,
        poll_interval=scope.settings.relay_poll_interval_ms / 1000,
    )
    if from_start:
        # A fresh in-memory broker holds nothing: publish the whole history again so topics
        # are complete; consumers skip what they already applied.
        await scope.pool.execute("DELETE FROM relay_checkpoints WHERE name = $1", relay.name)
        await scope.pool.execute("DELETE FROM consumer_offsets")
    scope.spawn("relay", relay.run(scope.stop))


async def _start_consumer(scope: _Scope, name: str, handler, event_types) -> None:
    states = RequestStates(scope.store)

    async def handle(conn: asyncpg.Connection, envelope) -> None:
        await handler(conn, envelope, states=states)

    consumer = EventConsumer(
        scope.pool,
        scope.settings,
        name=name,
        topics=[REQUEST_TOPIC],
        handler=handle,
        producer=await scope.producer(),
        event_types=frozenset(event_types),
    )
    scope.spawn(name, consumer.run(scope.stop))


def catalog_root(settings: Settings) -> Path:
    """The folder the catalog's Terraform modules are read from."""
    source = source_from_settings(settings)
    if isinstance(source, GitSource):
        return source.cache_dir / source.subpath if source.subpath else source.cache_dir
    assert isinstance(source, DirectorySource)
    return source.root


async def _start_fulfillment(scope: _Scope) -> None:
    settings = scope.settings
    session = await scope.session()
    secrets = secret_provider(settings)
    jira = None
    if settings.jira_url:
        token = settings.jira_token
        if token is None and settings.jira_token_secret:
            token = await secrets.get(settings.jira_token_secret)
        jira = JiraExecutor(
            JiraClient(
                settings.jira_url, session=session, username=settings.jira_username, token=token
            ),
            JiraSettings(correlation_field=settings.jira_correlation_field),
        )
    assert settings.database_url
    runner = TerraformRunner(
        work_root=settings.data_dir.resolve() / "terraform",
        state_dsn=settings.database_url,
        binary=settings.terraform_binary,
    )
    parts = Parts(
        pool=scope.pool,
        store=scope.store,
        jira=jira,
        terraform=TerraformExecutor(runner, catalog_root(settings)),
        rest=RestExecutor(session),
        secrets=secrets,
        system=system_scope(settings),
        environments=environments(settings),
        poll_seconds=settings.jira_poll_seconds,
        default_poll_seconds=settings.jira_default_poll_seconds,
    )
    await _start_consumer(
        scope, scheduling.CONSUMER, scheduling.on_request_event, scheduling.REACTS_TO
    )
    worker = Worker(
        parts,
        concurrency=settings.fulfillment_concurrency,
        threshold=settings.breaker_threshold,
        open_seconds=settings.breaker_seconds,
    )
    scope.spawn("fulfillment-worker", _leading(scope, "pao.fulfillment.worker", worker.run))


async def _leading(
    scope: _Scope, lock: str, body: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run `body` only while this process holds the named leader lock."""
    async with leadership(scope.pool, lock, scope.stop) as leading:
        if leading:
            await body(scope.stop)


async def _start_notification(scope: _Scope) -> None:
    from pao.stack.notifications import start_notifications

    await start_notifications(scope)


async def _start_gateway(scope: _Scope, keys: KeyStore) -> str:
    settings = scope.settings
    parts = CatalogParts(source=source_from_settings(settings), store=scope.store)
    await start_catalog(settings, parts, scope.stop, scope.tasks)
    app = create_app(settings, keys=keys, pool=scope.pool, catalog_parts=parts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    scope.cleanups.append(runner.cleanup)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


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
