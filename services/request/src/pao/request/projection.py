"""The request read models (`requests`, `request_actions`, `request_log`), kept by a projector.

The projector follows the event store in its commit-safe order and applies each event together
with its checkpoint in one transaction, so every event is applied exactly once. Rebuilding
empties the tables and resets the checkpoint in one transaction; the projector then replays the
whole history and arrives at the same rows.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import structlog

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import TERMINAL, next_status
from pao.shared.eventstore import Checkpoint, read_committed

log = structlog.get_logger(__name__)

NAME = "requests"
#: The longest a projection transaction applies events before it commits.
MAX_TRANSACTION_SECONDS = 0.05
TABLES = ("request_log", "request_actions", "requests")


def describe(event: ev.Event) -> tuple[str, str]:
    """The log level and the line a person reads for an event."""
    match event:
        case ev.RequestSubmitted():
            return "info", (
                f"{event.requester.id} requested {event.item_name} "
                f"{event.item_version} ({event.environment})"
            )
        case ev.ActionStarted():
            return "info", f"{event.action} ({event.action_type}) started, attempt {event.attempt}"
        case ev.ActionAwaitingManual():
            return (
                "info",
                f"{event.action}: {event.system} issue {event.key} opened, waiting for "
                f"it to be done: {event.url}",
            )
        case ev.ActionRetryScheduled():
            return "warning", (
                f"{event.action} attempt {event.attempt} failed ({event.error}); "
                f"retrying at {event.next_attempt_at}"
            )
        case ev.ActionSucceeded():
            return "info", f"{event.action} succeeded"
        case ev.ActionSkipped():
            return "info", f"{event.action} skipped: {event.reason}"
        case ev.ActionFailed():
            return (
                "error",
                f"{event.action} failed after {event.attempts} attempt(s): {event.error}",
            )
        case ev.ManualTicketUpdated():
            extra = f", priority {event.priority}" if event.priority else ""
            return "info", f"{event.key} updated{extra}: {event.comment}"
        case ev.RequestCompleted():
            return "info", "request completed"
        case ev.RequestFailed():
            return "error", f"request failed at {event.action}: {event.error}"
        case ev.RequestRetried():
            return "info", f"{event.by} retried the request ({', '.join(event.actions)})"
        case ev.RequestAborted():
            return "warning", f"{event.by} aborted the request: {event.reason}"
        case ev.RequestEscalated():
            return "warning", (
                f"{event.by} escalated the request to level {event.level} "
                f"({event.urgency}): {event.reason}"
            )
    return "info", type(event).__name__


async def apply(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    """Apply one request event to the read models."""
    if envelope.category != "request" or envelope.event_type not in ev.REQUEST_EVENTS:
        return
    event = ev.decode(envelope)
    request_id = envelope.stream_id.removeprefix("request-")
    at = envelope.occurred_at
    if isinstance(event, ev.RequestSubmitted):
        await conn.execute(
            """INSERT INTO requests (request_id, item_id, item_version, item_name, owner_team,
                   requester, requester_teams, environment, status, created_at, updated_at,
                   correlation_id, stream_version, inputs, details)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'submitted', $9, $9, $10, $11, $12, $13)
               ON CONFLICT (request_id) DO NOTHING""",
            request_id,
            event.item_id,
            event.item_version,
            event.item_name,
            event.owner_team,
            event.requester.id,
            event.requester.teams,
            event.environment,
            at,
            envelope.correlation_id,
            envelope.stream_version,
            event.resolved_inputs,
            {"requester": event.requester.model_dump(), "escalations": []},
        )
        for position, action in enumerate(event.item["fulfillment"]["actions"]):
            await conn.execute(
                "INSERT INTO request_actions (request_id, position, name, type, status) "
                "VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING",
                request_id,
                position,
                action["name"],
                action["type"],
            )
    else:
        current = await conn.fetchval(
            "SELECT status FROM requests WHERE request_id = $1 FOR UPDATE", request_id
        )
        if current is None:
            return  # a request whose submission this projection has not seen
        status = next_status(current, envelope.event_type)
        finished = status in TERMINAL and current not in TERMINAL
        await conn.execute(
            """UPDATE requests SET status = $2, updated_at = $3, stream_version = $4,
                   finished_at = CASE WHEN $5 THEN $3 WHEN $2 IN ('completed', 'failed',
                                 'aborted') THEN finished_at ELSE NULL END
               WHERE request_id = $1""",
            request_id,
            status,
            at,
            envelope.stream_version,
            finished,
        )
        await _apply_details(conn, request_id, event, at)
    level, message = describe(event)
    await conn.execute(
        """INSERT INTO request_log (request_id, seq, at, level, event_type, message, data,
               global_position)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
        request_id,
        envelope.stream_version,
        at,
        level,
        envelope.event_type,
        message,
        _log_data(event),
        envelope.global_position,
    )


def _log_data(event: ev.Event) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    data.pop("item", None)  # the pinned definition is on the request, not on every line
    data.pop("spec", None)
    return data


async def _apply_details(
    conn: asyncpg.Connection, request_id: str, event: ev.Event, at: Any
) -> None:
    action_sql = "UPDATE request_actions SET {} WHERE request_id = $1 AND name = $2"
    match event:
        case ev.ActionStarted():
            await conn.execute(
                action_sql.format(
                    "status = 'running', attempts = $3, error = NULL, "
                    "started_at = coalesce(started_at, $4), finished_at = NULL"
                ),
                request_id,
                event.action,
                event.attempt,
                at,
            )
        case ev.ActionAwaitingManual():
            await conn.execute(
                action_sql.format(
                    "status = 'awaiting_manual', external_key = $3, external_url = $4"
                ),
                request_id,
                event.action,
                event.key,
                event.url,
            )
        case ev.ActionRetryScheduled():
            await conn.execute(
                action_sql.format("status = 'retrying', error = $3"),
                request_id,
                event.action,
                event.error,
            )
        case ev.ActionSucceeded():
            await conn.execute(
                action_sql.format(
                    "status = 'succeeded', outputs = $3, error = NULL, finished_at = $4"
                ),
                request_id,
                event.action,
                event.outputs,
                at,
            )
        case ev.ActionSkipped():
            await conn.execute(
                action_sql.format("status = 'skipped', finished_at = $3"),
                request_id,
                event.action,
                at,
            )
        case ev.ActionFailed():
            await conn.execute(
                action_sql.format("status = 'failed', error = $3, attempts = $4, finished_at = $5"),
                request_id,
                event.action,
                event.error,
                event.attempts,
                at,
            )
            await conn.execute(
                "UPDATE requests SET last_error = $2 WHERE request_id = $1",
                request_id,
                f"{event.action}: {event.error}",
            )
        case ev.RequestRetried():
            await conn.execute(
                "UPDATE request_actions SET status = 'pending', error = NULL, attempts = 0, "
                "finished_at = NULL WHERE request_id = $1 AND name = ANY($2::text[])",
                request_id,
                event.actions,
            )
            await conn.execute(
                "UPDATE requests SET last_error = NULL WHERE request_id = $1", request_id
            )
        case ev.RequestFailed():
            await conn.execute(
                "UPDATE requests SET last_error = $2 WHERE request_id = $1",
                request_id,
                f"{event.action}: {event.error}",
            )
        case ev.RequestAborted():
            await conn.execute(
                "UPDATE requests SET last_error = $2 WHERE request_id = $1",
                request_id,
                f"aborted by {event.by}: {event.reason}",
            )
        case ev.RequestEscalated():
            entry = {
                "level": event.level,
                "reason": event.reason,
                "urgency": event.urgency,
                "by": event.by,
                "at": at.isoformat(),
            }
            await conn.execute(
                """UPDATE requests SET escalation_level = $2,
                       details = jsonb_set(details, '{escalations}',
                                           coalesce(details->'escalations', '[]'::jsonb) || $3)
                   WHERE request_id = $1""",
                request_id,
                event.level,
                json.loads(json.dumps([entry])),
            )


class Projector:
    """Keeps the request read models up to date with the store."""

    def __init__(
        self, pool: asyncpg.Pool, *, batch_size: int = 500, poll_interval: float = 0.01
    ) -> None:
        self._pool = pool
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._checkpoint: Checkpoint | None = None
        self._ahead: list[tuple[Checkpoint, EventEnvelope]] = []
        self.applied = 0

    async def _stored_checkpoint(self, conn: asyncpg.Connection) -> Checkpoint:
        row = await conn.fetchrow(
            "SELECT transaction_id::text AS txid, global_position FROM projection_checkpoints "
            "WHERE name = $1 FOR UPDATE",
            NAME,
        )
        if row is None:
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, transaction_id, global_position) "
                "VALUES ($1, '0', 0) ON CONFLICT DO NOTHING",
                NAME,
            )
            return Checkpoint()
        return Checkpoint(int(row["txid"]), row["global_position"])

    async def step(self) -> int:
        """Apply the next events with their checkpoint in one short transaction; return how many.

        Events are read before the transaction starts, and it commits after at most
        MAX_TRANSACTION_SECONDS of work: while it is open it holds back the commit-safe horizon
        that the relay and this projector read up to, so it must stay short.
        """
        if self._checkpoint is None:
            async with self._pool.acquire() as conn, conn.transaction():
                self._checkpoint = await self._stored_checkpoint(conn)
        if not self._ahead:
            # Read ahead once and apply over several short transactions: reading (and decoding)
            # a batch again for every transaction would cost more than applying it.
            self._ahead = await read_committed(self._pool, self._checkpoint, self._batch_size)
        batch = self._ahead
        if not batch:
            return 0
        applied = 0
        reached = self._checkpoint
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._stored_checkpoint(conn)
            if stored != self._checkpoint:
                self._checkpoint = stored  # rebuilt meanwhile: start again from there
                self._ahead = []
                return 0
            started = time.monotonic()
            for checkpoint, envelope in batch:
                await apply(conn, envelope)
                applied += 1
                reached = checkpoint
                if time.monotonic() - started > MAX_TRANSACTION_SECONDS:
                    break
            await conn.execute(
                "UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, "
                "global_position = $3, updated_at = now() WHERE name = $1",
                NAME,
                str(reached.transaction_id),
                reached.global_position,
            )
        # Only once committed: a failed transaction leaves the buffer and checkpoint as they were.
        self._checkpoint = reached
        del self._ahead[:applied]
        self.applied += applied
        return applied

    async def catch_up(self) -> int:
        """Apply until nothing committed is left; return how many events were applied."""
        total = 0
        while True:
            applied = await self.step() or await self.step()  # a second try after a rebuild
            if not applied:
                return total
            total += applied

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the store until `stop` is set."""
        backoff = 0.1
        while not stop.is_set():
            try:
                applied = await self.step()
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - a database blip must not end the projector
                log.warning("projection step failed; retrying", error=str(exc), retry_in=backoff)
                applied = 0
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not applied:
                await _sleep(stop, self._poll_interval)


async def rebuild(pool: asyncpg.Pool) -> int:
    """Empty the read models, then replay every event from position 0; return how many."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, transaction_id, global_position) "
            "VALUES ($1, '0', 0) ON CONFLICT DO NOTHING",
            NAME,
        )
        # The row lock makes a running projector wait, then start again from zero.
        await conn.execute("SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE", NAME)
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        await conn.execute(
            "UPDATE projection_checkpoints SET transaction_id = '0', global_position = 0 "
            "WHERE name = $1",
            NAME,
        )
    return await Projector(pool).catch_up()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
