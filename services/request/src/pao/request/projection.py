"""The request read models (`requests`, `request_actions`, `request_log`), kept by a projector.

Rows are what the request aggregate's fold says: the projector keeps each request's state (its
snapshot) beside the columns, folds new events through `RequestState.apply` and writes the
columns from the result, so no second table of statuses exists.

The projector follows the event store in its commit-safe order and applies each event together
with its checkpoint in one transaction, so every event is applied exactly once. Rebuilding
empties the tables and resets the checkpoint in one transaction; the projector then replays the
whole history and arrives at the same rows.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import RequestState, fold, stream_of
from pao.request.resource import ResourceState
from pao.shared.eventstore import Checkpoint, read_committed, read_stream
from pao.shared.lifecycle import pause

log = structlog.get_logger(__name__)

NAME = "requests"
TABLES = ("request_log", "request_actions", "requests", "resources")


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
        case ev.ActionPlanned():
            c = event.plan.counts
            what = "destroy plan" if event.plan.destroy else "plan"
            again = f" (again: {event.replaces} no longer applied)" if event.replaces else ""
            return "info", (
                f"{event.action}: {what} {event.plan.plan_id}{again}: {c.get('add', 0)} to add, "
                f"{c.get('change', 0)} to change, {c.get('replace', 0)} to replace, "
                f"{c.get('destroy', 0)} to destroy"
            )
        case ev.ApprovalRequested():
            approvers = event.policy.approvers
            who = ", ".join([*approvers.users, *approvers.teams, *approvers.roles])
            what = f"the plan of {event.action}" if event.plan_id else event.action or "request"
            return "info", f"waiting for approval of {what} by {event.policy.needed} of: {who}"
        case ev.ApprovalDecided():
            comment = f": {event.comment}" if event.comment else ""
            level = "info" if event.decision == "approved" else "warning"
            return level, f"{event.by} {event.decision}{comment}"
        case ev.ApprovalGranted():
            return "info", "approved; going on"
        case ev.ActionApplying():
            return "info", f"{event.action}: applying plan {event.plan_id}, attempt {event.attempt}"
        case ev.ActionLogged():
            return event.level, f"{event.action}: {event.message}"
    return "info", type(event).__name__


def _log_data(event: ev.Event) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    data.pop("spec", None)  # the rendered spec is kept in the store, not on every log line
    if isinstance(data.get("plan"), dict):
        data["plan"].pop("changes", None)  # `GET .../plan` shows them
    return data


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


#: Bookkeeping between the services, not news for the person following a request.
_NOT_LOGGED = frozenset({"ActionDispatched", "ApplyDispatched"})

_UPSERT_REQUEST = """
INSERT INTO requests (request_id, item_id, item_version, item_name, owner_team, requester,
    requester_teams, environment, status, escalation_level, created_at, updated_at, finished_at,
    correlation_id, last_error, stream_version, inputs, details, state, kind, resource_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21)
ON CONFLICT (request_id) DO UPDATE SET status = EXCLUDED.status,
    escalation_level = EXCLUDED.escalation_level, updated_at = EXCLUDED.updated_at,
    finished_at = EXCLUDED.finished_at, last_error = EXCLUDED.last_error,
    stream_version = EXCLUDED.stream_version, details = EXCLUDED.details, state = EXCLUDED.state
"""

_UPSERT_ACTION = """
INSERT INTO request_actions (request_id, position, name, type, status, attempts, outputs, error,
    started_at, finished_at, external_key, external_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (request_id, name) DO UPDATE SET status = EXCLUDED.status,
    attempts = EXCLUDED.attempts, outputs = EXCLUDED.outputs, error = EXCLUDED.error,
    started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
    external_key = EXCLUDED.external_key, external_url = EXCLUDED.external_url
"""


def _request_row(state: RequestState) -> tuple[Any, ...]:
    submitted = state.submitted
    assert submitted is not None
    return (
        state.request_id,
        submitted.item_id,
        submitted.item_version,
        submitted.item_name,
        submitted.owner_team,
        submitted.requester.id,
        submitted.requester.teams,
        submitted.environment,
        state.status,
        state.escalation_level,
        _time(state.submitted_at),
        _time(state.updated_at),
        _time(state.finished_at),
        state.correlation_id,
        state.last_error,
        state.version,
        submitted.resolved_inputs,
        {
            "requester": submitted.requester.model_dump(),
            "escalations": [asdict(e) for e in state.escalations],
        },
        state.snapshot(),
        submitted.kind,
        submitted.resource_id,
    )


def _action_rows(state: RequestState) -> list[tuple[Any, ...]]:
    return [
        (
            state.request_id,
            position,
            a.name,
            a.type,
            a.status,
            a.attempts,
            a.outputs,
            a.error,
            _time(a.started_at),
            _time(a.finished_at),
            a.key,
            a.url,
        )
        for position, a in enumerate(state.actions)
    ]


async def _states(conn: asyncpg.Connection, ids: list[str]) -> dict[str, RequestState]:
    """The states the read model holds for these requests (as of their last projected event)."""
    states = {}
    for row in await conn.fetch(
        "SELECT request_id, state FROM requests WHERE request_id = ANY($1::text[])", ids
    ):
        state = RequestState.from_snapshot(row["state"]) if row["state"] else None
        if state is None:  # a row written in another shape: fold the request again
            state = fold(row["request_id"], await read_stream(conn, stream_of(row["request_id"])))
        states[row["request_id"]] = state
    return states


async def apply_batch(conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
    """Fold events (in store order) into the read models through the request aggregate: the
    states they touch are read once, folded here, and written back with a few statements."""
    await _apply_resources(conn, [e for e in envelopes if e.category == "resource"])
    ours = [e for e in envelopes if e.category == "request" and e.event_type in ev.REQUEST_EVENTS]
    if not ours:
        return
    states = await _states(conn, list({e.stream_id.removeprefix("request-") for e in ours}))
    changed: dict[str, RequestState] = {}
    logs = []
    for envelope in ours:
        request_id = envelope.stream_id.removeprefix("request-")
        state = states.get(request_id)
        if state is None:
            if envelope.event_type != "RequestSubmitted":
                continue  # a request whose submission this projection has not seen
            state = states[request_id] = RequestState(request_id)
        if envelope.stream_version > state.version:
            state.apply(envelope)
            changed[request_id] = state
        if envelope.event_type in _NOT_LOGGED:
            continue
        event = ev.decode(envelope)
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
    if changed:
        await conn.executemany(_UPSERT_REQUEST, [_request_row(s) for s in changed.values()])
        await conn.executemany(
            _UPSERT_ACTION, [row for s in changed.values() for row in _action_rows(s)]
        )
    await conn.executemany(
        """INSERT INTO request_log (request_id, seq, at, level, event_type, message, data,
               global_position)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
        logs,
    )


_UPSERT_RESOURCE = """
INSERT INTO resources (resource_id, item_id, item_version, item_name, owner_team, owner,
    environment, state, inputs, outputs, created_at, updated_at, expires_at, expiry_noticed,
    last_request_id, note, stream_version, snapshot)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (resource_id) DO UPDATE SET item_version = EXCLUDED.item_version,
    state = EXCLUDED.state, inputs = EXCLUDED.inputs, outputs = EXCLUDED.outputs,
    updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at,
    expiry_noticed = EXCLUDED.expiry_noticed, last_request_id = EXCLUDED.last_request_id,
    note = EXCLUDED.note, stream_version = EXCLUDED.stream_version, snapshot = EXCLUDED.snapshot
"""


async def _apply_resources(conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
    """Fold resource events into the `resources` read model, through the resource aggregate."""
    ours = [e for e in envelopes if e.event_type in ev.RESOURCE_EVENTS]
    if not ours:
        return
    ids = list({e.stream_id.removeprefix("resource-") for e in ours})
    states = {
        row["resource_id"]: ResourceState.from_json(row["snapshot"])
        for row in await conn.fetch(
            "SELECT resource_id, snapshot FROM resources WHERE resource_id = ANY($1::text[])", ids
        )
    }
    changed: dict[str, ResourceState] = {}
    for envelope in ours:
        resource_id = envelope.stream_id.removeprefix("resource-")
        state = states.setdefault(resource_id, ResourceState(resource_id))
        if envelope.stream_version == state.version + 1:
            state.apply(envelope)
            changed[resource_id] = state
    await conn.executemany(
        _UPSERT_RESOURCE,
        [
            (
                s.resource_id,
                s.item_id,
                s.item_version,
                s.item_name,
                s.owner_team,
                s.owner,
                s.environment,
                s.state,
                s.inputs,
                s.outputs,
                _time(s.created_at),
                _time(s.updated_at),
                _time(s.expires_at),
                _time(s.expiry_noticed),
                s.last_request_id,
                s.note,
                s.version,
                s.to_json(),
            )
            for s in changed.values()
            if s.exists
        ],
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
