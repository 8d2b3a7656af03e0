"""Pooled connections go back to their pool without a reset round trip, so nothing a session
holds may outlive its use: a leader's session (its advisory lock, its idle timeout) is closed
when its term ends instead of being handed to the next user of the pool."""

from __future__ import annotations

import asyncio
import zlib

import pytest

from pao.shared.database import create_pool
from pao.shared.lifecycle import leadership
from support import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "test-pool-sessions"


async def test_a_leaders_session_does_not_go_back_to_the_pool(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, application_name="pao-tests")
    stop = asyncio.Event()
    try:
        async with leadership(pool, NAME, stop) as lead:
            assert lead.held
        # The pool's one connection is a new session: the server's idle timeout, no lock.
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW idle_session_timeout") == "0"

            async def lock_gone() -> bool:
                held = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                    zlib.crc32(NAME.encode()),
                )
                return held == 0

            await eventually(lock_gone, timeout=5, what="the leader's lock to go with its session")
    finally:
        stop.set()
        await pool.close()


async def test_a_connection_released_inside_a_transaction_is_rolled_back(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, application_name="pao-tests")
    try:
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("SET LOCAL statement_timeout = '1234ms'")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert await again.fetchval("SHOW statement_timeout") == "0"
            assert not again.is_in_transaction()
    finally:
        await pool.close()
