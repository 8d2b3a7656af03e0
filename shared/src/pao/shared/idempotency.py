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


async def handle_once(
    pool: asyncpg.Pool, *, consumer: str, event: EventEnvelope, handler: Handler
) -> bool:
    """Run `handler` for `event` unless `consumer` already applied it; True if it ran.

    The handler's writes and the processed mark commit together. The mark is written last so the
    handler's own first write (typically an append) takes the transaction id; two copies of one
    event racing each other both run the handler, but only one commits: the other hits the
    primary key and rolls back everything it did.
    """
    try:
        async with pool.acquire() as conn, conn.transaction():
            if await already_processed(conn, consumer, event.event_id):
                return False
            await handler(conn, event)
            try:
                await conn.execute(
                    "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)",
                    consumer,
                    event.event_id,
                )
            except asyncpg.UniqueViolationError as exc:
                raise _AlreadyProcessed from exc
    except _AlreadyProcessed:
        return False
    return True
