"""Long-running loops: pausing until a stop signal, and leadership through an advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator

import asyncpg


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


@contextlib.asynccontextmanager
async def leadership(pool: asyncpg.Pool, name: str, stop: asyncio.Event) -> AsyncIterator[bool]:
    """Hold the PostgreSQL advisory lock `name` for the block, so one instance leads.

    Waits for it (others hold it until they stop or their session ends); yields False when
    `stop` is set first. The lock is session-level: a crashed leader's session ending frees it.
    """
    key = zlib.crc32(name.encode())
    async with pool.acquire() as conn:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if await pause(stop, 1.0):
                yield False
                return
        try:
            yield True
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
