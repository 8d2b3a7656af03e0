"""`GET /api/v1/stats`: the platform's figures for the people who run it.

Every figure comes from PostgreSQL when it is asked for, never from a process's memory, so any
number of gateways (and workers, relays, consumers) answer alike. Each query is bounded: by a
time window on an indexed column, by the open part of the job queue (partial indexes), or by a
cap on how many events it counts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from pao.contracts.stats import (
    Breakers,
    ConsumerLag,
    Lags,
    Latencies,
    Latency,
    ParkedSystem,
    PlatformStats,
    ProjectorLag,
    Queue,
    RelayLag,
    Throughput,
)
from pao.gateway.authz import require_platform_role
from pao.gateway.resources import IDENTITY, SETTINGS, read_pool

routes = web.RouteTableDef()

#: (name, seconds) of the throughput windows; the last one is also the latency window.
WINDOWS = (("5m", 300), ("1h", 3600))
#: Lags are counted event by event up to this many; a checkpoint further behind shows the cap.
LAG_CAP = 100_000

BREAKER_NOTE = (
    "breaker state is kept in each fulfilment worker's memory (its pao_breaker_state metric); "
    "listed here are the systems with work parked behind an open breaker"
)

_THROUGHPUT_SQL = """
SELECT
    (SELECT count(*) FROM requests WHERE created_at >= now() - make_interval(secs => $1))
        AS submitted,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'aborted') AS aborted
FROM requests
WHERE finished_at >= now() - make_interval(secs => $1)
"""

# A mode of None is the item's default (requests submitted before modes were recorded).
_LATENCY_SQL = """
SELECT GROUPING(item_id) = 0 AS per_item, item_id, mode, count(*) AS count,
       coalesce(percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY seconds), '{}')
           AS percentiles
FROM (SELECT item_id, state #>> '{state,submitted,mode}' AS mode,
             extract(epoch FROM finished_at - created_at)::float8 AS seconds
      FROM requests
      WHERE finished_at >= now() - make_interval(secs => $1)) finished
GROUP BY GROUPING SETS ((), (item_id, mode))
ORDER BY per_item, item_id, mode NULLS FIRST
"""

_QUEUE_SQL = """
SELECT count(*) FILTER (WHERE state = 'pending' AND due_at <= now()) AS due,
       extract(epoch FROM now() - min(due_at) FILTER (WHERE state = 'pending' AND due_at <= now()))
           AS oldest_due_age,
       count(*) FILTER (WHERE state = 'pending' AND due_at > now()) AS scheduled,
       count(*) FILTER (WHERE state = 'running' AND lease_until >= now()) AS running,
       count(*) FILTER (WHERE state = 'running' AND lease_until < now()) AS expired_leases
FROM fulfillment_jobs
WHERE state IN ('pending', 'running')
"""

# Parked work is rescheduled with the breaker's message, "<system> breaker open"
# (pao.fulfillment.breakers.Parked).
_PARKED_SQL = """
SELECT left(last_error, -length(' breaker open')) AS system, count(*) AS parked_jobs,
       max(updated_at) AS last_parked_at
FROM fulfillment_jobs
WHERE state = 'pending' AND last_error LIKE '% breaker open'
GROUP BY 1
ORDER BY 1
"""

# Events after a checkpoint, in the relay's order (transaction_id, global_position): the index
# events_relay_order answers both, the count up to a cap.
_BEHIND_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM events
    WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
    LIMIT $3
) after
"""
_FIRST_UNPUBLISHED_SQL = """
SELECT extract(epoch FROM now() - recorded_at)::float8 FROM events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
ORDER BY transaction_id, global_position
LIMIT 1
"""


@routes.get("/api/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """The platform's figures: throughput, latencies, queue, breakers, lags (admin or platform)."""
    require_platform_role(request[IDENTITY], "read the platform's figures")
    relay_name = request.app[SETTINGS].relay_name
    async with read_pool(request.app).acquire() as conn, conn.transaction(readonly=True):
        # One snapshot for every figure, so they describe the same moment.
        body = await platform_stats(conn, relay_name=relay_name)
    return web.json_response(body.model_dump(mode="json"))


async def platform_stats(conn: asyncpg.Connection, *, relay_name: str) -> PlatformStats:
    """Every figure, read in the caller's transaction."""
    generated_at = await conn.fetchval("SELECT now()")
    return PlatformStats(
        generated_at=generated_at,
        throughput=[await throughput(conn, name, seconds) for name, seconds in WINDOWS],
        latencies=await latencies(conn, *WINDOWS[-1]),
        queue=await queue(conn),
        breakers=Breakers(note=BREAKER_NOTE, parked=await parked_systems(conn)),
        lags=await lags(conn, relay_name=relay_name),
    )


async def throughput(conn: asyncpg.Connection, window: str, seconds: int) -> Throughput:
    """Requests submitted and finished (completed, failed, aborted) in the last `seconds`."""
    row = await conn.fetchrow(_THROUGHPUT_SQL, float(seconds))
    finished = row["completed"] + row["failed"] + row["aborted"]
    return Throughput(
        window=window,
        seconds=seconds,
        submitted=row["submitted"],
        completed=row["completed"],
        failed=row["failed"],
        aborted=row["aborted"],
        submitted_per_minute=round(row["submitted"] * 60 / seconds, 3),
        finished_per_minute=round(finished * 60 / seconds, 3),
    )


async def latencies(conn: asyncpg.Connection, window: str, seconds: int) -> Latencies:
    """Submit-to-terminal percentiles of the requests that finished in the window."""
    overall = Latency(count=0, p50=None, p95=None, p99=None)
    by_item = []
    for row in await conn.fetch(_LATENCY_SQL, float(seconds)):
        # No request finished in the window: the overall row has a count of 0 and no figures.
        p50, p95, p99 = [round(p, 3) for p in row["percentiles"]] or [None, None, None]
        figures = Latency(
            item_id=row["item_id"], mode=row["mode"], count=row["count"], p50=p50, p95=p95, p99=p99
        )
        if row["per_item"]:
            by_item.append(figures)
        else:
            overall = figures
    return Latencies(window=window, seconds=seconds, overall=overall, by_item=by_item)


async def queue(conn: asyncpg.Connection) -> Queue:
    """The open part of the fulfilment job queue."""
    row = await conn.fetchrow(_QUEUE_SQL)
    age = row["oldest_due_age"]
    return Queue(
        due=row["due"],
        oldest_due_age_seconds=round(float(age), 3) if age is not None else None,
        scheduled=row["scheduled"],
        running=row["running"],
        expired_leases=row["expired_leases"],
    )


async def parked_systems(conn: asyncpg.Connection) -> list[ParkedSystem]:
    """Systems that workers found out, with the work parked behind their breakers."""
    return [ParkedSystem(**dict(row)) for row in await conn.fetch(_PARKED_SQL)]


async def lags(conn: asyncpg.Connection, *, relay_name: str) -> Lags:
    """The relays, projectors and consumer groups against the head of the store."""
    head = await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
    relays = []
    published: dict[str, Any] = {}
    for row in await conn.fetch(
        "SELECT name, transaction_id::text AS txid, global_position, published, updated_at "
        "FROM relay_checkpoints ORDER BY name"
    ):
        behind, oldest = await _after(conn, row["txid"], row["global_position"])
        relays.append(
            RelayLag(
                name=row["name"],
                checkpoint_position=row["global_position"],
                behind=behind,
                oldest_unpublished_age_seconds=oldest,
                updated_at=row["updated_at"],
            )
        )
        if row["name"] == relay_name:
            published = dict(row["published"])
    projectors = []
    for row in await conn.fetch(
        "SELECT name, transaction_id::text AS txid, global_position, updated_at "
        "FROM projection_checkpoints ORDER BY name"
    ):
        behind, _ = await _after(conn, row["txid"], row["global_position"], oldest=False)
        projectors.append(
            ProjectorLag(
                name=row["name"],
                checkpoint_position=row["global_position"],
                behind=behind,
                updated_at=row["updated_at"],
            )
        )
    return Lags(
        head_position=head,
        relays=relays,
        projectors=projectors,
        consumers=await consumer_lags(conn, published),
    )


async def _after(
    conn: asyncpg.Connection, txid: str, position: int, *, oldest: bool = True
) -> tuple[int, float | None]:
    behind = await conn.fetchval(_BEHIND_SQL, txid, position, LAG_CAP)
    if not behind or not oldest:
        return behind, None
    age = await conn.fetchval(_FIRST_UNPUBLISHED_SQL, txid, position)
    return behind, round(age, 3) if age is not None else None


async def consumer_lags(conn: asyncpg.Connection, published: dict[str, Any]) -> list[ConsumerLag]:
    """Each group's committed offsets against what the relay published to the same partitions.

    The broker's own end offsets are not in PostgreSQL; the relay's record of the next offset of
    every partition it produced to is, and the relay is the only producer of PAO's event topics.
    A partition a group has not committed on yet counts whole."""
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(
        "SELECT consumer, topic, partition, next_offset, updated_at FROM consumer_offsets"
    )
    ends: dict[str, dict[int, int]] = defaultdict(dict)
    for where, offset in published.items():
        topic, _, partition = where.rpartition("/")
        ends[topic][int(partition)] = int(offset)
    groups: dict[tuple[str, str], dict[int, asyncpg.Record]] = defaultdict(dict)
    for row in rows:
        groups[(row["consumer"], row["topic"])][row["partition"]] = row
    answer = []
    for (consumer, topic), committed in sorted(groups.items()):
        topic_ends = ends.get(topic, {})
        partitions = set(committed) | set(topic_ends)
        last: datetime = max(r["updated_at"] for r in committed.values())
        offsets = {p: committed[p]["next_offset"] if p in committed else 0 for p in partitions}
        answer.append(
            ConsumerLag(
                consumer=consumer,
                topic=topic,
                partitions=len(partitions),
                committed=sum(offsets.values()),
                published=sum(topic_ends.values()),
                behind=sum(max(topic_ends.get(p, 0) - offsets[p], 0) for p in partitions),
                last_commit_at=last,
                last_commit_age_seconds=round((now - last).total_seconds(), 3),
            )
        )
    return answer
