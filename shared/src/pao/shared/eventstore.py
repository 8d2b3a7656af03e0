"""The append-only event store: a stream per aggregate, optimistic concurrency, global order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import orjson

from pao.contracts.envelope import EventEnvelope, NewEvent
from pao.shared import metrics, tracing

#: Pass as `expected_version` to append without a concurrency check.
ANY_VERSION: Final = -1

_COLUMNS = (
    "global_position, event_id, stream_id, stream_version, event_type, schema_version, "
    "occurred_at, correlation_id, causation_id, actor, data, traceparent"
)

# One statement appends a whole batch. The WHERE clause refuses an expected version the stream has
# not reached (which would leave a hole); the unique (stream_id, stream_version) constraint refuses
# one it has passed, including a concurrent appender that got there first. $11 is the trace
# context of the append, the same for the whole batch.
_APPEND_SQL = """
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                    occurred_at, correlation_id, causation_id, actor, data, traceparent)
SELECT e.event_id, $1, $2 + e.n, e.event_type, e.schema_version,
       e.occurred_at, e.correlation_id, e.causation_id, e.actor, e.data::jsonb, $11
FROM unnest($3::uuid[], $4::text[], $5::int[], $6::timestamptz[], $7::text[], $8::text[],
            $9::text[], $10::text[])
     WITH ORDINALITY AS e(event_id, event_type, schema_version, occurred_at, correlation_id,
                          causation_id, actor, data, n)
WHERE $2 = 0 OR EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND stream_version = $2)
ORDER BY e.n
RETURNING global_position, stream_version
"""

# The same for the common case of one event, without the cost of unnest.
_APPEND_ONE_SQL = """
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                    occurred_at, correlation_id, causation_id, actor, data, traceparent)
SELECT $3, $1, $2 + 1, $4, $5, $6, $7, $8, $9, $10::text::jsonb, $11
WHERE $2 = 0 OR EXISTS (SELECT 1 FROM events WHERE stream_id = $1 AND stream_version = $2)
RETURNING global_position, stream_version
"""


# A new stream's first event, inserted only if the claim (an INSERT ... ON CONFLICT DO NOTHING
# RETURNING, with parameters from $10) inserted a row: one statement, so one round trip. The
# trace context is the last parameter, after the claim's.
_START_IF_CLAIMED_SQL = """
WITH claimed AS ({claim})
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                    occurred_at, correlation_id, causation_id, actor, data, traceparent)
SELECT $2, $1, 1, $3, $4, $5, $6, $7, $8, $9::text::jsonb, ${traceparent} FROM claimed
RETURNING global_position
"""


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first; re-read it and decide again."""

    def __init__(self, stream_id: str, expected_version: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        super().__init__(
            f"stream {stream_id!r} is no longer at version {expected_version}: "
            "another writer appended first"
        )


def envelope_from_row(row: asyncpg.Record) -> EventEnvelope:
    """An envelope from a row of the events table (already validated when it was written)."""
    return EventEnvelope.model_construct(
        event_id=row["event_id"],
        event_type=row["event_type"],
        schema_version=row["schema_version"],
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        global_position=row["global_position"],
        occurred_at=row["occurred_at"],
        correlation_id=row["correlation_id"],
        causation_id=row["causation_id"],
        actor=row["actor"],
        data=row["data"],
        traceparent=row["traceparent"],
    )


class EventStore:
    """Appends and reads events in PostgreSQL. Rows are never updated or deleted."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        conn: asyncpg.Connection | None = None,
    ) -> list[EventEnvelope]:
        """Append events after `expected_version` (0 for a new stream, ANY_VERSION for no check).

        Pass `conn` to append inside the caller's transaction (for example a consumer recording
        the event it handled); the append should then be the transaction's first write, so that
        its transaction id orders it after everything it has read.
        """
        if not events:
            return []
        if conn is not None:
            return await self._append(conn, stream_id, events, expected_version)
        if expected_version != ANY_VERSION:
            # One INSERT statement is atomic on its own: no BEGIN/COMMIT round trips needed.
            async with self._pool.acquire() as own:
                return await self._append(own, stream_id, events, expected_version)
        attempts = 5
        for attempt in range(1, attempts + 1):
            try:
                async with self._pool.acquire() as own, own.transaction():
                    return await self._append(own, stream_id, events, expected_version)
            except ConcurrencyConflict:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    async def _append(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
    ) -> list[EventEnvelope]:
        if expected_version == ANY_VERSION:
            expected_version = await self._current_version(conn, stream_id)
        values = [
            (
                e.event_id,
                e.event_type,
                e.schema_version,
                e.occurred_at,
                e.correlation_id,
                e.causation_id,
                e.actor,
                orjson.dumps(e.data).decode(),
            )
            for e in events
        ]
        if len(values) == 1:
            sql, args = _APPEND_ONE_SQL, values[0]
        else:
            sql, args = _APPEND_SQL, tuple(list(column) for column in zip(*values, strict=True))
        traceparent = tracing.current_traceparent()
        started = time.perf_counter()
        try:
            rows = await conn.fetch(sql, stream_id, expected_version, *args, traceparent)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_version_unique":
                metrics.EVENTSTORE_APPEND_CONFLICTS.inc()
                raise ConcurrencyConflict(stream_id, expected_version) from exc
            raise
        finally:
            metrics.EVENTSTORE_APPEND_DURATION.observe(time.perf_counter() - started)
        if not rows:
            metrics.EVENTSTORE_APPEND_CONFLICTS.inc()
            raise ConcurrencyConflict(stream_id, expected_version)
        return [
            EventEnvelope.model_construct(
                event_id=e.event_id,
                event_type=e.event_type,
                schema_version=e.schema_version,
                stream_id=stream_id,
                stream_version=row["stream_version"],
                global_position=row["global_position"],
                occurred_at=e.occurred_at,
                correlation_id=e.correlation_id,
                causation_id=e.causation_id,
                actor=e.actor,
                data=e.data,
                traceparent=traceparent,
            )
            for e, row in zip(events, rows, strict=True)
        ]

    async def start_stream_if_claimed(
        self, stream_id: str, event: NewEvent, *, claim: str, claim_args: Sequence[Any]
    ) -> EventEnvelope | None:
        """Start a stream with `event` in the same statement as `claim` (an INSERT ... ON
        CONFLICT DO NOTHING RETURNING, its parameters numbered from $10); None when the claim
        found its row taken, in which case nothing is written."""
        traceparent = tracing.current_traceparent()
        position = await self._pool.fetchval(
            _START_IF_CLAIMED_SQL.format(claim=claim, traceparent=10 + len(claim_args)),
            stream_id,
            event.event_id,
            event.event_type,
            event.schema_version,
            event.occurred_at,
            event.correlation_id,
            event.causation_id,
            event.actor,
            orjson.dumps(event.data).decode(),
            *claim_args,
            traceparent,
        )
        if position is None:
            return None
        return EventEnvelope.model_construct(
            event_id=event.event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            stream_id=stream_id,
            stream_version=1,
            global_position=position,
            occurred_at=event.occurred_at,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            actor=event.actor,
            data=event.data,
            traceparent=traceparent,
        )

    @staticmethod
    async def _current_version(conn: asyncpg.Connection, stream_id: str) -> int:
        version = await conn.fetchval(
            "SELECT max(stream_version) FROM events WHERE stream_id = $1", stream_id
        )
        return int(version or 0)

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it has no events."""
        async with self._pool.acquire() as conn:
            return await self._current_version(conn, stream_id)

    async def read_stream(
        self, stream_id: str, *, from_version: int = 1, conn: asyncpg.Connection | None = None
    ) -> list[EventEnvelope]:
        """Every event of one stream from `from_version`, in version order."""
        return await read_stream(conn or self._pool, stream_id, from_version=from_version)

    async def read_all(self, *, after_position: int = 0, limit: int = 1_000) -> list[EventEnvelope]:
        """Committed events after a global position, in position order (for rebuilds and audits).

        Live followers use the relay's order instead: positions are taken when a row is inserted,
        so a position can become visible after a higher one.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE global_position > $1 "
                "ORDER BY global_position LIMIT $2",
                after_position,
                limit,
            )
        return [envelope_from_row(r) for r in rows]

    async def last_position(self) -> int:
        """The highest committed global position, 0 for an empty store."""
        async with self._pool.acquire() as conn:
            return int(await conn.fetchval("SELECT coalesce(max(global_position), 0) FROM events"))


async def read_stream(
    conn: asyncpg.Connection | asyncpg.Pool, stream_id: str, *, from_version: int = 1
) -> list[EventEnvelope]:
    """Every event of one stream from `from_version`, in version order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 "
        "ORDER BY stream_version",
        stream_id,
        from_version,
    )
    return [envelope_from_row(r) for r in rows]


# Commit-safe order: only rows whose transaction is older than every transaction still running,
# in (transaction id, position) order. See pao.shared.relay for why this never skips a row.
_COMMITTED_SQL = """
SELECT transaction_id::text AS txid, global_position, event_id, stream_id, stream_version,
       event_type, schema_version, occurred_at, correlation_id, causation_id, actor, data,
       traceparent
FROM events
WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
  AND ($4::text IS NULL OR stream_id LIKE $4)
ORDER BY transaction_id, global_position
LIMIT $3
"""


@dataclass(frozen=True, slots=True, order=True)
class Checkpoint:
    """A place in the commit-safe order of the store."""

    transaction_id: int = 0
    global_position: int = 0


async def read_committed(
    conn: asyncpg.Connection | asyncpg.Pool,
    after: Checkpoint,
    limit: int,
    *,
    stream_prefix: str | None = None,
) -> list[tuple[Checkpoint, EventEnvelope]]:
    """Events after `after` in commit-safe order, each with its checkpoint."""
    rows = await conn.fetch(
        _COMMITTED_SQL,
        str(after.transaction_id),
        after.global_position,
        limit,
        f"{stream_prefix}%" if stream_prefix else None,
    )
    return [(Checkpoint(int(r["txid"]), r["global_position"]), envelope_from_row(r)) for r in rows]
