"""The fulfilment job queue in PostgreSQL: scheduled idempotently, claimed with SKIP LOCKED.

A claim is a lease that the claiming worker renews while the job runs. A job whose lease ran out
(its worker died or froze) is claimed by another worker; the old claim is then fenced: finishing
or rescheduling the job under it fails with LeaseLost, which rolls back the transaction it is in
(a step's report included), so a worker that wakes too late records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from pao.shared import metrics, tracing


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
    claim: str = ""
    #: The trace context the job was scheduled in, which its run continues.
    traceparent: str | None = None


class LeaseLost(Exception):
    """Another worker took the job over: this claim may no longer change it."""


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
    """Add a job unless one with the same dedupe key exists; True if added. The job keeps the
    current trace context, for its run to continue."""
    added = await conn.fetchval(
        """INSERT INTO fulfillment_jobs (request_id, action, generation, kind, dedupe_key,
               payload, attempt, due_at, traceparent)
           VALUES ($1, $2, $8, $3, $4, $5, $6, now() + make_interval(secs => $7), $9)
           ON CONFLICT (dedupe_key) DO NOTHING RETURNING id""",
        request_id,
        action,
        kind,
        dedupe_key,
        payload or {},
        attempt,
        delay,
        generation,
        tracing.current_traceparent(),
    )
    return added is not None


async def claim(
    pool: asyncpg.Pool, limit: int, *, lease: float, worker: str | None = None
) -> list[Job]:
    """Due jobs, and jobs whose lease ran out, leased to the caller; other workers skip them."""
    rows = await pool.fetch(
        """UPDATE fulfillment_jobs
           SET state = 'running', claim = gen_random_uuid()::text, worker = $3,
               lease_until = now() + make_interval(secs => $2), updated_at = now()
           WHERE id IN (SELECT id FROM fulfillment_jobs
                        WHERE (state = 'pending' AND due_at <= now())
                           OR (state = 'running' AND lease_until < now())
                        -- New work first: a backlog of polls must not delay opening tickets.
                        ORDER BY kind = 'poll', due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, request_id, action, generation, kind, attempt, payload, due_at,
                     created_at, claim, traceparent""",
        limit,
        lease,
        worker,
    )
    return [Job(**dict(r)) for r in rows]


async def renew(pool: asyncpg.Pool, claims: list[str], *, lease: float) -> int:
    """Extend the leases of the caller's running jobs; returns how many it still holds."""
    if not claims:
        return 0
    result = await pool.execute(
        "UPDATE fulfillment_jobs SET lease_until = now() + make_interval(secs => $2) "
        "WHERE claim = ANY($1::text[]) AND state = 'running'",
        claims,
        lease,
    )
    return int(result.split()[-1])


def _held(result: str, job: Job) -> None:
    if result.split()[-1] == "0":
        raise LeaseLost(f"job {job.id} was taken over by another worker")


async def hold(conn: asyncpg.Connection, job: Job) -> None:
    """Check, inside the caller's transaction, that the caller's claim still holds the job, and
    keep it held until that transaction ends (the row is locked: a worker taking over a lapsed
    lease skips it until then). Raises LeaseLost, which rolls the transaction back."""
    held = await conn.fetchval(
        "SELECT true FROM fulfillment_jobs WHERE id = $1 AND claim = $2 AND state = 'running' "
        "FOR UPDATE",
        job.id,
        job.claim,
    )
    if not held:
        raise LeaseLost(f"job {job.id} was taken over by another worker")


async def finish(
    conn: asyncpg.Connection | asyncpg.Pool, job: Job, *, error: str | None = None
) -> None:
    """The job is done (it may have failed for good: the error is kept)."""
    result = await conn.execute(
        "UPDATE fulfillment_jobs SET state = 'done', last_error = $2, updated_at = now() "
        "WHERE id = $1 AND claim = $3 AND state = 'running'",
        job.id,
        error,
        job.claim,
    )
    _held(result, job)


async def reschedule(
    conn: asyncpg.Connection | asyncpg.Pool,
    job: Job,
    *,
    delay: float,
    attempt: int | None = None,
    error: str | None = None,
) -> None:
    """Run the job again after `delay` seconds (the next attempt, or the same one when parked)."""
    result = await conn.execute(
        """UPDATE fulfillment_jobs SET state = 'pending', attempt = $2, last_error = $3,
               due_at = now() + make_interval(secs => $4), updated_at = now(), claim = NULL,
               lease_until = NULL
           WHERE id = $1 AND claim = $5 AND state = 'running'""",
        job.id,
        attempt or job.attempt,
        error,
        delay,
        job.claim,
    )
    _held(result, job)


async def cancel_for_request(conn: asyncpg.Connection, request_id: str) -> int:
    """Cancel the request's pending executions and polls (an abort)."""
    result = await conn.execute(
        "UPDATE fulfillment_jobs SET state = 'cancelled', updated_at = now() "
        "WHERE request_id = $1 AND state = 'pending' AND kind IN ('execute', 'apply', 'poll')",
        request_id,
    )
    return int(result.split()[-1])


# Only live jobs (pending or running) are read: the partial indexes keep this to the backlog.
_BACKLOG_SQL = """
SELECT count(*) FILTER (WHERE state = 'pending' AND due_at <= now()) AS due,
       extract(epoch FROM now() - min(due_at) FILTER (WHERE state = 'pending' AND due_at <= now()))
           AS oldest,
       count(*) FILTER (WHERE kind = 'poll') AS polling
FROM fulfillment_jobs
WHERE state IN ('pending', 'running')
"""


async def sample_backlog(pool: asyncpg.Pool) -> None:
    """Set the queue's gauges: jobs due, how long the oldest has waited, tickets being polled."""
    row = await pool.fetchrow(_BACKLOG_SQL)
    metrics.JOBS_DUE.set(row["due"])
    metrics.JOBS_OLDEST_DUE_AGE.set(max(float(row["oldest"] or 0.0), 0.0))
    metrics.JIRA_WATCHED_ISSUES.set(row["polling"])
