"""Idempotent consumers: each records the events it applied, in its own effects' transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from pao.contracts.envelope import EventEnvelope

Handler = Callable[[asyncpg.Connection, EventEnvelope], Awaitable[None]]


class _AlreadyProcessed(Exception):
    """Raised inside the transaction to roll back a concurrent duplicate's effects."""


async def already_processed(conn: asyncpg.Connection, consumer: str, event_id: UUID) -> bool:
    """Whether `consumer` has applied this event."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2",
            consumer,
            event_id,
        )
    )


Fence = Callable[[asyncpg.Connection], Awaitable[None]]


async def handle_once(
    pool: asyncpg.Pool,
    *,
    consumer: str,
    event: EventEnvelope,
    handler: Handler,
    fence: Fence | None = None,
    instance: str | None = None,
) -> bool:
    """Run `handler` for `event` unless `consumer` already applied it; True if it ran.

    The handler's writes and the processed mark commit together. The mark is written last so the
    handler's own first write (typically an append) takes the transaction id; two copies of one
    event racing each other both run the handler, but only one commits: the other hits the
    primary key and rolls back everything it did. `fence`, run after the handler (so it never
    takes the transaction id first), may raise to roll everything back: an instance that no
    longer owns the event's partition.
    """
    try:
        async with pool.acquire() as conn, conn.transaction():
            if await already_processed(conn, consumer, event.event_id):
                return False
            await handler(conn, event)
            if fence is not None:
                await fence(conn)
            try:
                await conn.execute(
                    "INSERT INTO processed_events (consumer, event_id, handled_by) "
                    "VALUES ($1, $2, $3)",
                    consumer,
                    event.event_id,
                    instance,
                )
            except asyncpg.UniqueViolationError as exc:
                raise _AlreadyProcessed from exc
    except _AlreadyProcessed:
        return False
    return True
