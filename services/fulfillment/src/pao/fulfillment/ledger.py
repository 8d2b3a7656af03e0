"""What fulfilment knows of each request, and what it records about it.

A request's row (`fulfillment_requests`) is built from the request events fulfilment receives;
each action's current run (`fulfillment_actions`) changes only through fulfilment's own reports,
which `record` appends to the request's fulfilment stream and folds into the rows in the same
transaction. So the tables and the stream never disagree, and a step's report and its next job
commit together or not at all.

The append comes first in that transaction, with the stream version the transaction read
(optimistic concurrency, as for every stream): it is the transaction's first write, so its
transaction id orders it after the reports before it (see `pao.shared.relay`), and a second
writer of the same request fails with a conflict and tries again from a fresh read (`write`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from pao.contracts import events as ev
from pao.shared.eventstore import ConcurrencyConflict, EventStore

_ATTEMPTS = 5

#: Runs that will not change again (until a new generation is dispatched).
FINISHED = frozenset({"succeeded", "skipped", "failed"})


@dataclass
class Run:
    """The current run (generation) of one action."""

    action: str
    type: str
    generation: int
    status: str = "dispatched"
    attempt: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    ticket_key: str | None = None
    ticket_url: str | None = None
    plan_id: str | None = None

    def apply(self, report: ev.ActionReport) -> None:
        """Fold one of fulfilment's own reports about this run."""
        match report:
            case ev.ExecutionStarted():
                self.status, self.attempt = "running", report.attempt
            case ev.ExecutionPlanned():
                self.status, self.plan_id = "planned", report.plan.plan_id
            case ev.ExecutionApplying():
                self.status, self.attempt = "applying", report.attempt
            case ev.ManualTicketOpened():
                self.status, self.ticket_key, self.ticket_url = (
                    "awaiting_manual",
                    report.key,
                    report.url,
                )
            case ev.ExecutionRetryScheduled():
                self.status = "retrying"
            case ev.ExecutionSucceeded():
                self.status, self.outputs = "succeeded", report.outputs
            case ev.ExecutionSkipped():
                self.status = "skipped"
            case ev.ExecutionFailed():
                self.status = "failed"
            case _:
                pass


@dataclass
class Fulfillment:
    """A request as fulfilment sees it: what was asked, by whom, and each action's run."""

    request_id: str
    item_id: str
    item_version: str
    item_hash: str
    correlation_id: str | None
    requester: dict[str, Any]
    environment: str
    inputs: dict[str, Any]
    submitted_at: datetime
    aborted: bool
    stream_version: int
    runs: dict[str, Run]
    kind: str = "create"
    resource_id: str | None = None
    #: what the resource's earlier requests recorded, by action (for an update or decommission)
    resource_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the actions that succeeded, for later actions' templates."""
        return {name: run.outputs for name, run in self.runs.items() if run.status == "succeeded"}


_REQUEST_COLUMNS = (
    "request_id, item_id, item_version, item_hash, correlation_id, requester, environment, "
    "inputs, submitted_at, aborted, stream_version, kind, resource_id, resource_outputs"
)


async def load(conn: asyncpg.Connection | asyncpg.Pool, request_id: str) -> Fulfillment | None:
    """The request and its runs."""
    row = await conn.fetchrow(
        f"SELECT {_REQUEST_COLUMNS} FROM fulfillment_requests WHERE request_id = $1", request_id
    )
    if row is None:
        return None
    runs = {
        r["action"]: Run(**dict(r))
        for r in await conn.fetch(
            "SELECT action, type, generation, status, attempt, outputs, ticket_key, ticket_url, "
            "plan_id "
            "FROM fulfillment_actions WHERE request_id = $1",
            request_id,
        )
    }
    return Fulfillment(**dict(row), runs=runs)


Step = Callable[[asyncpg.Connection, Fulfillment], Awaitable[None]]


async def write(pool: asyncpg.Pool, store: EventStore, request_id: str, step: Step) -> None:
    """Run `step` in a transaction with the request as it is now; again from a fresh read when
    another writer recorded something first. `step` calls `record` before any other write."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                fulfillment = await load(conn, request_id)
                if fulfillment is None:
                    raise LookupError(f"fulfilment knows no request {request_id}")
                await step(conn, fulfillment)
                return
        except ConcurrencyConflict:
            if attempt == _ATTEMPTS:
                raise


async def open_request(
    conn: asyncpg.Connection, submitted: ev.RequestSubmitted, *, correlation_id: str | None,
    submitted_at: datetime,
) -> None:  # fmt: skip
    """Remember a submitted request (once)."""
    await conn.execute(
        f"INSERT INTO fulfillment_requests ({_REQUEST_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, 0, $10, $11, $12) "
        "ON CONFLICT DO NOTHING",
        submitted.request_id,
        submitted.item_id,
        submitted.item_version,
        submitted.item_hash,
        correlation_id,
        submitted.requester.model_dump(),
        submitted.environment,
        submitted.resolved_inputs,
        submitted_at,
        submitted.kind,
        submitted.resource_id,
        submitted.resource_outputs,
    )


async def start_run(conn: asyncpg.Connection, dispatched: ev.ActionDispatched) -> bool:
    """A new run of the action, replacing an older generation's; False for a stale dispatch."""
    started = await conn.fetchval(
        """INSERT INTO fulfillment_actions (request_id, action, type, generation, status)
           VALUES ($1, $2, $3, $4, 'dispatched')
           ON CONFLICT (request_id, action) DO UPDATE
           SET generation = EXCLUDED.generation, status = 'dispatched', attempt = 0,
               outputs = '{}', ticket_key = NULL, ticket_url = NULL, plan_id = NULL
           WHERE fulfillment_actions.generation < EXCLUDED.generation
           RETURNING true""",
        dispatched.request_id,
        dispatched.action,
        dispatched.action_type,
        dispatched.generation,
    )
    return bool(started)


async def mark_aborted(conn: asyncpg.Connection, request_id: str) -> Fulfillment | None:
    """The request was aborted: nothing more runs. Returns it as it stands once its row is
    locked, so a run recorded meanwhile (a ticket just opened) is seen, or sees the abort."""
    if not await conn.fetchval(
        "UPDATE fulfillment_requests SET aborted = true WHERE request_id = $1 RETURNING true",
        request_id,
    ):
        return None
    return await load(conn, request_id)


async def record(
    conn: asyncpg.Connection,
    store: EventStore,
    fulfillment: Fulfillment,
    *reports: ev.ActionReport,
) -> bool:
    """Append reports to the request's fulfilment stream and fold them into its runs, in the
    caller's transaction; returns whether the request has been aborted meanwhile (read under
    its row's lock, so an abort is either seen here or sees these reports)."""
    await store.append(
        ev.fulfillment_stream(fulfillment.request_id),
        [
            r.new(correlation_id=fulfillment.correlation_id, actor="pao-fulfillment")
            for r in reports
        ],
        fulfillment.stream_version,
        conn=conn,
    )
    fulfillment.stream_version += len(reports)
    touched = set()
    for report in reports:
        run = fulfillment.runs.get(report.action)
        if run is not None and run.generation == report.generation:
            run.apply(report)
            touched.add(report.action)
    aborted = await conn.fetchval(
        "UPDATE fulfillment_requests SET stream_version = $2 WHERE request_id = $1 "
        "RETURNING aborted",
        fulfillment.request_id,
        fulfillment.stream_version,
    )
    await conn.executemany(
        """UPDATE fulfillment_actions SET status = $4, attempt = $5, outputs = $6,
               ticket_key = $7, ticket_url = $8, plan_id = $9
           WHERE request_id = $1 AND action = $2 AND generation = $3""",
        [
            (
                fulfillment.request_id,
                name,
                run.generation,
                run.status,
                run.attempt,
                run.outputs,
                run.ticket_key,
                run.ticket_url,
                run.plan_id,
            )
            for name in touched
            for run in [fulfillment.runs[name]]
        ],
    )
    fulfillment.aborted = bool(aborted)
    return fulfillment.aborted
