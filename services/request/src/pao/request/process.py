"""The process manager: when the fulfilment reports, it decides whether the request has ended."""

from __future__ import annotations

import asyncpg

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import FALLBACK, TERMINAL, stream_of
from pao.request.states import RequestStates

CONSUMER = "pao-request-process"
REACTS_TO = frozenset({"ActionSucceeded", "ActionSkipped", "ActionFailed"})


async def on_action_event(
    conn: asyncpg.Connection,
    envelope: EventEnvelope,
    *,
    states: RequestStates,
) -> None:
    """All actions done -> RequestCompleted; an action failed for good -> RequestFailed."""
    if envelope.event_type not in REACTS_TO:
        return
    request_id = envelope.stream_id.removeprefix("request-")
    state = await states.load(request_id, conn=conn)
    if not state.exists or state.status in TERMINAL:
        return
    decided: ev.Event | None = None
    if envelope.event_type == "ActionFailed":
        failed = next((a for a in state.actions if a.status == "failed"), None)
        if failed is not None and failed.name != FALLBACK and state.may_fall_back:
            decided = ev.FallbackStarted(
                request_id=request_id, failed_action=failed.name, error=failed.error or "failed"
            )
        elif failed is not None:
            decided = ev.RequestFailed(
                request_id=request_id, action=failed.name, error=failed.error or "failed"
            )
    elif state.all_done:
        decided = ev.RequestCompleted(request_id=request_id, outputs=state.outputs)
    if decided is not None:
        await states.store.append(
            stream_of(request_id),
            [
                decided.new(
                    correlation_id=envelope.correlation_id,
                    causation_id=str(envelope.event_id),
                    actor="pao",
                )
            ],
            state.version,
            conn=conn,
        )
