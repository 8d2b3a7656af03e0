"""From request events to fulfilment jobs (the fulfilment service's event handler)."""

from __future__ import annotations

import asyncpg

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.fulfillment import jobs
from pao.fulfillment.worker import PRIORITY_FOR_URGENCY
from pao.request.aggregate import ActionState
from pao.request.states import RequestStates

CONSUMER = "pao-fulfillment"
ADVANCES = frozenset(
    {"RequestSubmitted", "RequestRetried", "ActionSucceeded", "ActionSkipped", "FallbackStarted"}
)
REACTS_TO = ADVANCES | {"RequestAborted", "RequestEscalated"}


async def on_request_event(
    conn: asyncpg.Connection,
    envelope: EventEnvelope,
    *,
    states: RequestStates,
) -> None:
    """Schedule the next action, cancel work of an aborted request, or tell its tickets."""
    if envelope.event_type not in REACTS_TO:
        return
    request_id = envelope.stream_id.removeprefix("request-")
    state = await states.load(request_id, conn=conn)
    if not state.exists:
        return
    event = ev.decode(envelope)
    if envelope.event_type in ADVANCES:
        action = state.next_action()
        if action is not None and action.status == "pending":
            await jobs.schedule(
                conn,
                request_id=request_id,
                action=action.name,
                kind="execute",
                dedupe_key=f"execute:{request_id}:{action.name}:{envelope.event_id}",
            )
    elif isinstance(event, ev.RequestAborted):
        await jobs.cancel_for_request(conn, request_id)
        for action in state.actions:
            if action.type == "jira" and action.status == "awaiting_manual" and action.key:
                await _comment(
                    conn,
                    envelope,
                    action,
                    f"PAO request {request_id} was aborted by {event.by}: "
                    f"{event.reason}. No further work is needed on this issue.",
                )
    elif isinstance(event, ev.RequestEscalated):
        tickets = [a for a in state.actions if a.type == "jira" and a.key]
        open_first = sorted(tickets, key=lambda a: a.status != "awaiting_manual")
        if open_first:
            await _comment(
                conn,
                envelope,
                open_first[0],
                f"Escalated to level {event.level} ({event.urgency}) by {event.by}: {event.reason}",
                priority=PRIORITY_FOR_URGENCY[event.urgency],
            )


async def _comment(
    conn: asyncpg.Connection,
    envelope: EventEnvelope,
    action: ActionState,
    comment: str,
    *,
    priority: str | None = None,
) -> None:
    """Schedule a comment on the action's JIRA issue, once per event (and a new priority)."""
    payload = {"key": action.key, "comment": comment}
    if priority is not None:
        payload["priority"] = priority
    await jobs.schedule(
        conn,
        request_id=envelope.stream_id.removeprefix("request-"),
        action=action.name,
        kind="comment",
        dedupe_key=f"comment:{envelope.event_id}:{action.name}",
        payload=payload,
    )
