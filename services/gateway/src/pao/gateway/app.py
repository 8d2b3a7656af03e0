"""The gateway application: one place wires routes, middlewares and shared resources."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from aiohttp import web

from pao.gateway import health, identity
from pao.gateway.middleware import authenticate, correlation_and_errors
from pao.gateway.resources import KEYS, POOL, READINESS_CHECKS, SETTINGS, ReadinessCheck
from pao.shared.kafka import broker_reachable
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings


def create_app(
    settings: Settings,
    *,
    keys: KeyStore,
    pool: asyncpg.Pool,
    readiness_checks: Iterable[ReadinessCheck] | None = None,
) -> web.Application:
    """The aiohttp application; tests call this with their own parts."""
    app = web.Application(
        middlewares=[correlation_and_errors, authenticate],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[KEYS] = keys
    app[POOL] = pool
    app[READINESS_CHECKS] = (
        list(readiness_checks)
        if readiness_checks is not None
        else default_readiness_checks(settings, pool)
    )
    app.add_routes(health.routes)
    app.add_routes(identity.routes)
    return app


def default_readiness_checks(settings: Settings, pool: asyncpg.Pool) -> list[ReadinessCheck]:
    """The database and the broker."""

    async def database() -> str:
        await pool.fetchval("SELECT 1")
        return "SELECT 1 answered"

    async def broker() -> str:
        ok, detail = await broker_reachable(settings)
        if not ok:
            raise ConnectionError(detail)
        return f"metadata answered ({detail})"

    return [ReadinessCheck("database", database), ReadinessCheck("broker", broker)]
