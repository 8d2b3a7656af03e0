"""The fulfilment job queue in PostgreSQL: scheduled idempotently, claimed with SKIP LOCKED."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Job:
    """One unit of fulfilment work."""

    id: int
    request_id: str
    action: str
    generation: int
    kind: str
    attempt: int
    payload: dict[str, Any]
    due_at: datetime
    created_at: datetime


async def schedule(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    request_id: str,
    action: str,
    generation: int,
    kind: str,
    dedupe_key: str,
    payload: dict[str, Any] | None = None,
    delay: float = 0.0,
    attempt: int = 1,
) -> bool:
    """Add a job unless one with the same dedupe key exists; True if added."""
    added = await conn.fetchval(
        """INSERT INTO fulfillment_jobs (request_id, action, generation, kind, dedupe_key,
               payload, attempt, due_at)
           VALUES ($1, $2, $8, $3, $4, $5, $6, now() + make_interval(secs => $7))
           ON CONFLICT (dedupe_key) DO NOTHING RETURNING id""",
        request_id,
        action,
        kind,
        dedupe_key,
        payload or {},
        attempt,
        delay,
        generation,
    )
    return added is not None


async def claim(pool: asyncpg.Pool, limit: int) -> list[Job]:
    """Due jobs, marked running; other workers skip them."""
    rows = await pool.fetch(
        """UPDATE fulfillment_jobs SET state = 'running', updated_at = now()
           WHERE id IN (SELECT id FROM fulfillment_jobs
                        WHERE state = 'pending' AND due_at <= now()
                        -- New work first: a backlog of polls must not delay opening tickets.
                        ORDER BY kind = 'poll', due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, request_id, action, generation, kind, attempt, payload, due_at,
                     created_at""",
        limit,
    )
    return [Job(**dict(r)) for r in rows]


async def finish(
    conn: asyncpg.Connection | asyncpg.Pool, job: Job, *, error: str | None = None
) -> None:
    """The job is done (it may have failed for good: the error is kept)."""
    await conn.execute(
        "UPDATE fulfillment_jobs SET state = 'done', last_error = $2, updated_at = now() "
        "WHERE id = $1",
        job.id,
        error,
    )


async def reschedule(
    conn: asyncpg.Connection | asyncpg.Pool,
    job: Job,
    *,
    delay: float,
    attempt: int | None = None,
    error: str | None = None,
) -> None:
    """Run the job again after `delay` seconds (the next attempt, or the same one when parked)."""
    await conn.execute(
        """UPDATE fulfillment_jobs SET state = 'pending', attempt = $2, last_error = $3,
               due_at = now() + make_interval(secs => $4), updated_at = now()
           WHERE id = $1""",
        job.id,
        attempt or job.attempt,
        error,
        delay,
    )


async def cancel_for_request(conn: asyncpg.Connection, request_id: str) -> int:
    """Cancel the request's pending executions and polls (an abort)."""
    result = await conn.execute(
        "UPDATE fulfillment_jobs SET state = 'cancelled', updated_at = now() "
        "WHERE request_id = $1 AND state = 'pending' AND kind IN ('execute', 'poll')",
        request_id,
    )
    return int(result.split()[-1])


async def release_abandoned(pool: asyncpg.Pool) -> int:
    """Jobs left running by a worker that died: pending again (called by the new leader)."""
    result = await pool.execute(
        "UPDATE fulfillment_jobs SET state = 'pending', updated_at = now() WHERE state = 'running'"
    )
    return int(result.split()[-1])
