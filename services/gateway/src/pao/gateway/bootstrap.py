"""Wiring the gateway: the catalog it serves, its application, its HTTP listener."""

from __future__ import annotations

from aiohttp import web

from pao.catalog.bootstrap import CatalogParts, source_from_settings, start_view
from pao.gateway.app import create_app
from pao.shared.keystore import KeyStore
from pao.shared.runtime import Scope


async def start(scope: Scope, keys: KeyStore) -> str:
    """Serve the REST API on the configured address; returns its base URL."""
    settings = scope.settings
    parts = CatalogParts(source=source_from_settings(settings), store=scope.store)
    await start_view(scope, parts)
    app = create_app(settings, keys=keys, pool=scope.pool, catalog_parts=parts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    scope.cleanups.append(runner.cleanup)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"
