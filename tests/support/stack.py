"""The PAO services running in the test's own process, on their own database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from conftest import REPO, fresh_database, signed_client
from pao.devctl.profiles import Profile, save_profile
from pao.shared.database import create_pool
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from pao.stack.runtime import Running, run_services


@dataclass
class Stack:
    """A running PAO: its gateway URL, its database and settings."""

    url: str
    pool: asyncpg.Pool
    settings: Settings


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings, keys: KeyStore, *, services: tuple[str, ...], data_dir: Path
) -> AsyncIterator[Stack]:
    """Start the services; yield when the gateway answers; stop everything afterwards."""
    settings = settings.model_copy(
        update={
            "relay_name": f"test-{uuid.uuid4().hex[:8]}",
            "http_port": 0,
            "data_dir": data_dir,
        }
    )
    stop = asyncio.Event()
    started: asyncio.Future[Running] = asyncio.get_running_loop().create_future()

    async def on_started(running: Running) -> None:
        started.set_result(running)

    task = asyncio.create_task(
        run_services(settings, services, stop, keys=keys, on_started=on_started)
    )
    done, _ = await asyncio.wait([task, started], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped the start
    running = started.result()
    assert settings.database_url
    pool = await create_pool(
        settings.database_url, min_size=1, max_size=5, application_name="pao-tests"
    )
    try:
        yield Stack(running.gateway_url or "", pool, settings)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
        await pool.close()


@contextlib.asynccontextmanager
async def fresh_stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    *,
    services: tuple[str, ...],
    data_dir: Path,
    catalog_dir: Path = REPO / "catalog",
) -> AsyncIterator[Stack]:
    """`running_stack` on a database of its own, with the repository's catalog by default."""
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(update={"database_url": dsn, "catalog_dir": catalog_dir})
        async with running_stack(own, keys, services=services, data_dir=data_dir) as running:
            yield running


async def signed_call(url: str, method: str, path: str, key: tuple[str, str], **kw: Any) -> Any:
    """One call through devctl's client, signed with `key` (id, secret); its decoded answer."""
    client = signed_client(url, *key)
    try:
        return await asyncio.to_thread(client.request, method, path, **kw)
    finally:
        client.close()


def devctl_profile(path: Path, url: str, key: tuple[str, str]) -> Path:
    """A devctl config file at `path` whose default profile `local` signs with `key` at `url`."""
    save_profile(
        "local",
        Profile(endpoint=url, access_key_id=key[0], secret_access_key=key[1]),
        make_default=True,
        path=path,
    )
    return path
