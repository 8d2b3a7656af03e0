"""What every benchmark needs: a fresh database and a broker, started and stopped by the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from pao.shared.database import migrate
from pao.stack.runtime import MIGRATIONS


@contextlib.asynccontextmanager
async def fresh_database(*, migrated: bool = True) -> AsyncIterator[str]:
    """A database with every service's tables (empty with `migrated=False`), on
    PAO_DATABASE_URL's server or an embedded one."""
    server = os.environ.get("PAO_DATABASE_URL")
    embedded = None
    tmp = None
    if not server:
        from pao.devstack.postgres import EmbeddedPostgres

        tmp = tempfile.TemporaryDirectory(prefix="pao-bench-")
        embedded = EmbeddedPostgres(Path(tmp.name) / "pg")
        await embedded.start()
        server = embedded.dsn("postgres")
    name = f"pao_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = server.rpartition("/")[0] + f"/{name}"
    try:
        if migrated:
            await migrate(dsn, MIGRATIONS)
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            await embedded.stop()
        if tmp is not None:
            tmp.cleanup()


@contextlib.asynccontextmanager
async def broker() -> AsyncIterator[str]:
    """PAO_KAFKA_BOOTSTRAP, else a tansu broker on a free port."""
    external = os.environ.get("PAO_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from pao.devstack.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp:
        b = EmbeddedBroker(Path(tmp))
        await b.start()
        try:
            yield b.bootstrap
        finally:
            await b.stop()


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (0-100) of values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(pct * 10) - 1]


def write_keys(directory: Path, key_id: str, secret: str) -> Path:
    """A key store with the benchmark's one admin key, for the gateway it starts."""
    keys = directory / "keys.yaml"
    entry = {
        "access_key_id": key_id,
        "secret_access_key": secret,
        "user": "bench",
        "name": "Bench User",
        "email": "bench@example.com",
        "roles": ["admin"],
    }
    keys.write_text(yaml.safe_dump([entry]))
    return keys


async def serve_until_cancelled(routes: dict[tuple[str, str], Any], port: int) -> None:
    """A floor server: an aiohttp app answering `routes` ((method, path) -> handler) and
    `GET /api/v1/health/ready` on 127.0.0.1:`port`, until the task is cancelled."""
    from aiohttp import web

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    app.router.add_get("/api/v1/health/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def stop_all(processes: Any) -> None:
    """Stop the benchmark's child processes, showing the log of any that had died meanwhile."""
    for process in processes:
        crashed = not process.running
        await process.stop(timeout=30)
        if crashed:
            print(f"the {process.name} process had stopped before the end:")
            print(process.log_tail())
