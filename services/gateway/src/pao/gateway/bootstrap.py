"""Wiring the gateway: the catalog it serves, its application, its HTTP listener."""

from __future__ import annotations

import ipaddress

import asyncpg
import structlog
from aiohttp import web

from pao.catalog.bootstrap import CatalogParts, source_from_settings, start_view
from pao.gateway.app import create_app
from pao.gateway.resources import SESSIONS
from pao.shared.database import create_pool
from pao.shared.database_access import DatabaseAccess
from pao.shared.keystore import KeyStore
from pao.shared.runtime import Scope
from pao.shared.settings import Settings

log = structlog.get_logger("pao.gateway")

#: The gateway's own tables (sign-in sessions).
MIGRATIONS = "pao.gateway.migrations"


class UnsafeAuthModeError(Exception):
    """The gateway was asked to serve without authentication where others can reach it."""


def unsafe_auth_mode(settings: Settings) -> str | None:
    """Why the settings may not serve, if `PAO_AUTH_MODE=none` would be reachable by others."""
    host = settings.http_host
    if settings.auth_mode != "none" or _is_loopback(host):
        return None
    return (
        f"PAO_AUTH_MODE=none makes every caller an admin and is refused on {host!r}; "
        "bind PAO_HTTP_HOST to 127.0.0.1, ::1 or localhost, or use PAO_AUTH_MODE=sigv4"
    )


def check_auth_mode(settings: Settings) -> None:
    """Refuse `PAO_AUTH_MODE=none` unless bound to loopback, and warn whenever it is used."""
    problem = unsafe_auth_mode(settings)
    if problem:
        raise UnsafeAuthModeError(problem)
    if settings.auth_mode == "none":
        log.warning(
            "authentication is off: every caller is an admin (PAO_AUTH_MODE=none)",
            host=settings.http_host,
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def start(scope: Scope, keys: KeyStore) -> str:
    """Serve the REST API on the configured address; returns its base URL."""
    settings = scope.settings
    check_auth_mode(settings)
    parts = CatalogParts(source=source_from_settings(settings), store=scope.store)
    await start_view(scope, parts)
    read_pool = await _reader_pool(scope)
    app = create_app(settings, keys=keys, pool=scope.pool, catalog_parts=parts, read_pool=read_pool)
    app[SESSIONS].load()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.http_host,
        settings.http_port,
        reuse_address=True,
        reuse_port=settings.http_reuse_port or None,
    )
    await site.start()
    scope.cleanups.append(runner.cleanup)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _reader_pool(scope: Scope) -> asyncpg.Pool | None:
    """A pool on Aurora's reader endpoint (PAO_DATABASE_READ_URL), for the queries
    `resources.read_pool` names; None without one."""
    settings = scope.settings
    if not settings.database_read_url:
        return None
    pool = await create_pool(
        settings.database_read_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        application_name="pao-gateway-reader",
        access=DatabaseAccess.from_settings(
            settings, settings.database_read_url, variable="PAO_DATABASE_READ_URL", writer=False
        ),
    )
    scope.cleanups.append(pool.close)
    return pool
