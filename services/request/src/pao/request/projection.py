"""The request read models (`requests`, `request_actions`, `request_log`), kept by a projector.

The projector follows the event store in its commit-safe order and applies each event together
with its checkpoint in one transaction, so every event is applied exactly once. Rebuilding
empties the tables and resets the checkpoint in one transaction; the projector then replays the
whole history and arrives at the same rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import FALLBACK, TERMINAL, next_status
from pao.shared.eventstore import Checkpoint, read_committed
from pao.shared.lifecycle import pause

log = structlog.get_logger(__name__)

NAME = "requests"
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
        case ev.FallbackStarted():
            return "warning", (
                f"{event.failed_action} failed ({event.error}); falling back to a manual ticket"
            )
        case ev.RequestAborted():
            return "warning", f"{event.by} aborted the request: {event.reason}"
        case ev.RequestEscalated():
            return "warning", (
                f"{event.by} escalated the request to level {event.level} "
                f"({event.urgency}): {event.reason}"
            )
    return "info", type(event).__name__


def _log_data(event: ev.Event) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    data.pop("item", None)  # the pinned definition is on the request, not on every line
    data.pop("spec", None)
    return data


def _fold_request(row: dict[str, Any], envelope: EventEnvelope, event: ev.Event) -> None:
    """One event's effect on a `requests` row (as a dict)."""
    at = envelope.occurred_at
    old = row["status"]
    row["status"] = next_status(old, envelope.event_type)
    if row["status"] in TERMINAL:
        if old not in TERMINAL:
            row["finished_at"] = at
    else:
        row["finished_at"] = None
    row["updated_at"], row["stream_version"] = at, envelope.stream_version
    match event:
        case ev.ActionFailed() | ev.RequestFailed():
            row["last_error"] = f"{event.action}: {event.error}"
        case ev.RequestRetried():
            row["last_error"] = None
        case ev.RequestAborted():
            row["last_error"] = f"aborted by {event.by}: {event.reason}"
        case ev.RequestEscalated():
            row["escalation_level"] = event.level
            row["escalations"].append(
                {
                    "level": event.level,
                    "reason": event.reason,
                    "urgency": event.urgency,
                    "by": event.by,
                    "at": at.isoformat(),
                }
            )


def _fold_actions(
    actions: dict[str, dict[str, Any]], envelope: EventEnvelope, event: ev.Event
) -> set[str]:
    """One event's effect on the request's `request_actions` rows; the names it changed."""
    at = envelope.occurred_at
    name = getattr(event, "action", None)
    row = actions.get(name) if isinstance(name, str) else None
    match event:
        case ev.ActionStarted() if row:
            row.update(
                status="running",
                attempts=event.attempt,
                error=None,
                finished_at=None,
                started_at=row["started_at"] or at,
            )
        case ev.ActionAwaitingManual() if row:
            row.update(status="awaiting_manual", external_key=event.key, external_url=event.url)
        case ev.ActionRetryScheduled() if row:
            row.update(status="retrying", error=event.error)
        case ev.ActionSucceeded() if row:
            row.update(status="succeeded", outputs=event.outputs, error=None, finished_at=at)
        case ev.ActionSkipped() if row:
            row.update(status="skipped", finished_at=at)
        case ev.ActionFailed() if row:
            row.update(status="failed", error=event.error, attempts=event.attempts, finished_at=at)
        case ev.FallbackStarted():
            fallback = actions.get(FALLBACK)
            if fallback is None:
                return set()
            fallback.update(
                status="pending",
                error=None,
                attempts=0,
                finished_at=None,
                external_key=None,
                external_url=None,
            )
            return {FALLBACK}
        case ev.RequestRetried():
            for retried in event.actions:
                if retried in actions:
                    actions[retried].update(
                        status="pending", error=None, attempts=0, finished_at=None
                    )
            return {a for a in event.actions if a in actions}
        case _:
            return set()
    return {name} if row else set()


_ACTION_COLUMNS = (
    "status",
    "attempts",
    "outputs",
    "error",
    "started_at",
    "finished_at",
    "external_key",
    "external_url",
)


async def apply_batch(conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
    """Apply events (in store order) to the read models with a few set-based statements: the
    rows they touch are read once, folded here, and written back once."""
    decoded = [
        (e, ev.decode(e))
        for e in envelopes
        if e.category == "request" and e.event_type in ev.REQUEST_EVENTS
    ]
    if not decoded:
        return
    submissions = [(e, d) for e, d in decoded if isinstance(d, ev.RequestSubmitted)]
    if submissions:
        await conn.executemany(
            """INSERT INTO requests (request_id, item_id, item_version, item_name, owner_team,
                   requester, requester_teams, environment, status, created_at, updated_at,
                   correlation_id, stream_version, inputs, details)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'submitted', $9, $9, $10, $11, $12, $13)
               ON CONFLICT (request_id) DO NOTHING""",
            [
                (
                    d.request_id,
                    d.item_id,
                    d.item_version,
                    d.item_name,
                    d.owner_team,
                    d.requester.id,
                    d.requester.teams,
                    d.environment,
                    e.occurred_at,
                    e.correlation_id,
                    e.stream_version,
                    d.resolved_inputs,
                    {"requester": d.requester.model_dump(), "escalations": []},
                )
                for e, d in submissions
            ],
        )
        await conn.executemany(
            "INSERT INTO request_actions (request_id, position, name, type, status) "
            "VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT DO NOTHING",
            [
                (d.request_id, position, a["name"], a["type"])
                for _, d in submissions
                for position, a in enumerate(d.item["fulfillment"]["actions"])
            ],
        )
    fallbacks = [d.request_id for _, d in decoded if isinstance(d, ev.FallbackStarted)]
    if fallbacks:
        await conn.executemany(
            """INSERT INTO request_actions (request_id, position, name, type, status)
               SELECT $1, count(*), $2, 'jira', 'pending' FROM request_actions
               WHERE request_id = $1 ON CONFLICT DO NOTHING""",
            [(request_id, FALLBACK) for request_id in fallbacks],
        )
    ids = list({e.stream_id.removeprefix("request-") for e, _ in decoded})
    rows = {
        r["request_id"]: {**dict(r), "escalations": list(r["escalations"] or [])}
        for r in await conn.fetch(
            "SELECT request_id, status, updated_at, stream_version, finished_at, last_error, "
            "escalation_level, details->'escalations' AS escalations FROM requests "
            "WHERE request_id = ANY($1::text[])",
            ids,
        )
    }
    actions: dict[str, dict[str, dict[str, Any]]] = {}
    for r in await conn.fetch(
        f"SELECT request_id, name, {', '.join(_ACTION_COLUMNS)} FROM request_actions "
        "WHERE request_id = ANY($1::text[])",
        ids,
    ):
        actions.setdefault(r["request_id"], {})[r["name"]] = dict(r)
    changed_requests: set[str] = set()
    changed_actions: set[tuple[str, str]] = set()
    logs = []
    for envelope, event in decoded:
        request_id = envelope.stream_id.removeprefix("request-")
        row = rows.get(request_id)
        if row is None:
            continue  # a request whose submission this projection has not seen
        if (
            not isinstance(event, ev.RequestSubmitted)
            and envelope.stream_version > row["stream_version"]
        ):
            _fold_request(row, envelope, event)
            changed_requests.add(request_id)
            for name in _fold_actions(actions.get(request_id, {}), envelope, event):
                changed_actions.add((request_id, name))
        level, message = describe(event)
        logs.append(
            (
                request_id,
                envelope.stream_version,
                envelope.occurred_at,
                level,
                envelope.event_type,
                message,
                _log_data(event),
                envelope.global_position,
            )
        )
    if changed_requests:
        await conn.executemany(
            """UPDATE requests SET status = $2, updated_at = $3, stream_version = $4,
                   finished_at = $5, last_error = $6, escalation_level = $7,
                   details = jsonb_set(details, '{escalations}', $8::jsonb)
               WHERE request_id = $1""",
            [
                (
                    i,
                    rows[i]["status"],
                    rows[i]["updated_at"],
                    rows[i]["stream_version"],
                    rows[i]["finished_at"],
                    rows[i]["last_error"],
                    rows[i]["escalation_level"],
                    rows[i]["escalations"],
                )
                for i in changed_requests
            ],
        )
    if changed_actions:
        await conn.executemany(
            """UPDATE request_actions SET status = $3, attempts = $4, outputs = $5, error = $6,
                   started_at = $7, finished_at = $8, external_key = $9, external_url = $10
               WHERE request_id = $1 AND name = $2""",
            [(i, n, *(actions[i][n][c] for c in _ACTION_COLUMNS)) for i, n in changed_actions],
        )
    if logs:
        await conn.executemany(
            """INSERT INTO request_log (request_id, seq, at, level, event_type, message, data,
                   global_position)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
            logs,
        )


class Projector:
    """Keeps the request read models up to date with the store."""

    def __init__(
        self, pool: asyncpg.Pool, *, batch_size: int = 200, poll_interval: float = 0.01
    ) -> None:
        self._pool = pool
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._checkpoint: Checkpoint | None = None
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
        """Apply the next batch with its checkpoint in one transaction; return how many.

        The batch is read before the transaction starts and applied with a few set-based
        statements, so the transaction stays short: while it is open it holds back the
        commit-safe horizon that the relay and this projector read up to.
        """
        if self._checkpoint is None:
            async with self._pool.acquire() as conn, conn.transaction():
                self._checkpoint = await self._stored_checkpoint(conn)
        batch = await read_committed(self._pool, self._checkpoint, self._batch_size)
        if not batch:
            return 0
        reached = batch[-1][0]
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await self._stored_checkpoint(conn)
            if stored != self._checkpoint:
                self._checkpoint = stored  # rebuilt meanwhile: start again from there
                return 0
            await apply_batch(conn, [envelope for _, envelope in batch])
            await conn.execute(
                "UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, "
                "global_position = $3, updated_at = now() WHERE name = $1",
                NAME,
                str(reached.transaction_id),
                reached.global_position,
            )
        # Only once committed: a failed transaction leaves the checkpoint as it was.
        self._checkpoint = reached
        applied = len(batch)
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
                await pause(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not applied:
                await pause(stop, self._poll_interval)


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
