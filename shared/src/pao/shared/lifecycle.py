"""Long-running loops: pausing until a stop signal, and leadership through an advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from pao.shared.outages import Backoff, outage

log = structlog.get_logger(__name__)

#: How often a leader checks that the session holding its lock is still alive.
_WATCH_SECONDS = 1.0
#: How often an instance that is not leading tries to take the lock.
_TAKEOVER_SECONDS = 0.5
#: A leader's session silent this long (a frozen process) is ended by PostgreSQL, freeing the
#: lock for another instance; a live leader's watcher speaks every `_WATCH_SECONDS`.
_SILENT_LEADER = "10s"


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


@dataclass
class Leadership:
    """Whether this instance leads, and an event set when it must stop leading: the process is
    stopping, or the session holding the lock died (another instance may lead by now)."""

    held: bool
    ended: asyncio.Event = field(default_factory=asyncio.Event)


async def _watch(conn: asyncpg.Connection, lead: Leadership, stop: asyncio.Event) -> None:
    while not lead.ended.is_set():
        if await pause(stop, _WATCH_SECONDS):
            break
        try:
            await conn.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means the lock may be gone
            log.warning("leader's database session is gone; stepping down", error=str(exc))
            break
    lead.ended.set()


@contextlib.asynccontextmanager
async def leadership(
    pool: asyncpg.Pool, name: str, stop: asyncio.Event
) -> AsyncIterator[Leadership]:
    """Hold the PostgreSQL advisory lock `name` for the block, so one instance leads.

    Waits for it (others hold it until they stop or their session ends); yields a Leadership
    that is not held when `stop` is set first. The lock is session-level: a crashed leader's
    session ending frees it, and a leader whose session died is told through `ended`.
    """
    key = zlib.crc32(name.encode())
    conn = await pool.acquire()
    try:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if await pause(stop, _TAKEOVER_SECONDS):
                yield Leadership(held=False)
                return
        with contextlib.suppress(asyncpg.PostgresError):  # PostgreSQL 14 and later
            await conn.execute(f"SET idle_session_timeout = '{_SILENT_LEADER}'")
        lead = Leadership(held=True)
        watcher = asyncio.create_task(_watch(conn, lead, stop))
        try:
            yield lead
        finally:
            lead.ended.set()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher  # done with the connection before it is closed
    finally:
        # The session holds the lock and its own idle timeout: it ends here rather than going
        # back to the pool (whose connections are released without a reset), and the lock goes
        # with it.
        conn.terminate()
        with contextlib.suppress(Exception):
            await pool.release(conn)


async def run_as_leader(
    pool: asyncpg.Pool,
    name: str,
    stop: asyncio.Event,
    body: Callable[[asyncio.Event], Awaitable[None]],
) -> None:
    """Run `body(ended)` whenever this instance leads, until `stop`: a lost lock or a database
    outage ends the term, and the instance competes for the lock again once it can."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            async with leadership(pool, name, stop) as lead:
                if not lead.held:
                    return
                backoff.reset()
                await body(lead.ended)
        except Exception as exc:
            if not outage(exc):
                raise
            wait = backoff()
            log.warning("leader cannot reach the database; waiting", lock=name, retry_in=wait)
            await pause(stop, wait)
