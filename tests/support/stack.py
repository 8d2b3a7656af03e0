"""The PAO services running in the test's own process, on their own database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

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
