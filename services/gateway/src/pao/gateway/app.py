"""The gateway application: one place wires routes, middlewares and shared resources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import aiohttp
import asyncpg
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts
from pao.contracts.topics import ALL_TOPICS
from pao.gateway import (
    audit,
    catalog,
    health,
    history_routes,
    identity,
    preview,
    requests,
    resource_routes,
    signin,
    stats,
    validation,
    webhooks,
)
from pao.gateway.caching import VERSIONS, StreamVersions
from pao.gateway.follows import LogFollows, LogWakeups
from pao.gateway.metrics import http_metrics
from pao.gateway.middleware import authenticate, correlation_and_errors
from pao.gateway.portal import pages as portal_pages
from pao.gateway.portal import signin as portal_signin
from pao.gateway.portal.auth import PortalAuth
from pao.gateway.resources import (
    CATALOG,
    FOLLOWS,
    KEYS,
    POOL,
    PORTAL,
    READ_POOL,
    READINESS_CHECKS,
    SECRETS,
    SESSIONS,
    SETTINGS,
    STORE,
    STS_HTTP,
    WAKEUPS,
    ReadinessCheck,
)
from pao.gateway.sessions import SessionKeys
from pao.gateway.tracing import traced
from pao.shared.database_access import DatabaseAccess
from pao.shared.kafka import broker_reachable, missing_topics
from pao.shared.keystore import KeyStore
from pao.shared.secrets import SecretProvider, secret_provider
from pao.shared.settings import Settings


def create_app(
    settings: Settings,
    *,
    keys: KeyStore,
    pool: asyncpg.Pool,
    catalog_parts: CatalogParts,
    readiness_checks: Iterable[ReadinessCheck] | None = None,
    secrets: SecretProvider | None = None,
    read_pool: asyncpg.Pool | None = None,
) -> web.Application:
    """The aiohttp application; tests call this with their own parts. `read_pool`, when given,
    serves the list and figure queries (see `resources.read_pool`)."""
    app = web.Application(
        middlewares=[http_metrics, traced, correlation_and_errors, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[KEYS] = keys
    app[POOL] = pool
    app[READ_POOL] = read_pool or pool
    app[CATALOG] = catalog_parts
    app[STORE] = catalog_parts.store
    app[SECRETS] = secrets or secret_provider(settings)
    app[SESSIONS] = SessionKeys.from_settings(settings, pool)
    app[PORTAL] = PortalAuth(settings, pool, app[SESSIONS])
    app.cleanup_ctx.append(_sts_http)
    app[WAKEUPS] = LogWakeups(
        settings.database_url,
        access=DatabaseAccess.from_settings(settings, settings.database_url)
        if settings.database_url
        else None,
    )
    app[VERSIONS] = StreamVersions(app[WAKEUPS])
    app.cleanup_ctx.append(_log_wakeups)
    app[FOLLOWS] = LogFollows(
        per_user=settings.log_follows_per_user, total=settings.log_follows_total
    )
    app[READINESS_CHECKS] = (
        list(readiness_checks)
        if readiness_checks is not None
        else default_readiness_checks(settings, pool, catalog_parts)
    )
    for module in (
        health,
        identity,
        signin,
        catalog,
        validation,
        preview,
        requests,
        history_routes,
        resource_routes,
        stats,
        audit,
        webhooks,
        portal_signin,
        portal_pages,
    ):
        app.add_routes(module.routes)
    return app


async def _sts_http(app: web.Application) -> AsyncIterator[None]:
    """The HTTP client sign-ins reach STS with."""
    async with aiohttp.ClientSession() as http:
        app[STS_HTTP] = http
        yield


async def _log_wakeups(app: web.Application) -> AsyncIterator[None]:
    """The listener that wakes log streams when a request's log changes."""
    await app[WAKEUPS].start()
    yield
    await app[WAKEUPS].stop()


def default_readiness_checks(
    settings: Settings, pool: asyncpg.Pool, catalog_parts: CatalogParts
) -> list[ReadinessCheck]:
    """The database, the broker and a loaded catalog."""

    async def database() -> str:
        await pool.fetchval("SELECT 1")
        return "SELECT 1 answered"

    async def broker() -> str:
        ok, detail = await broker_reachable(settings)
        if not ok:
            raise ConnectionError(detail)
        missing = await missing_topics(settings, ALL_TOPICS)
        if missing:
            raise LookupError(f"the broker lacks PAO's topics: {', '.join(missing)}")
        return f"metadata answered ({detail})"

    async def catalog_loaded() -> str:
        view = catalog_parts.view
        if view.version is None:
            last = view.last_refresh
            reason = f"; last refresh {last.status} ({last.problems} problems)" if last else ""
            raise LookupError(f"no catalog loaded from {catalog_parts.source.describe()}{reason}")
        detail = f"version {view.version}, {len(view.items)} items"
        if view.last_refresh and view.last_refresh.status == "failed":
            detail += f" (last refresh failed with {view.last_refresh.problems} problems)"
        return detail

    return [
        ReadinessCheck("database", database),
        ReadinessCheck("broker", broker),
        ReadinessCheck("catalog", catalog_loaded),
    ]
