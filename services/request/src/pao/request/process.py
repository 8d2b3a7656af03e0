"""The process manager: moves each request on when something happens to it.

It hears the request's own events that call for a next step (a submission, a retry) and every
report fulfilment publishes about an action; for each, the aggregate decides, and what it decided
is appended to the request's stream in the consumer's transaction (so once per event).
"""

from __future__ import annotations

from functools import partial

from pao.contracts import events as ev
from pao.request.aggregate import RequestState, decide_next, decide_report, stream_of
from pao.request.states import RequestStates
from pao.shared.consumer import Delivery, Handlers

CONSUMER = "pao-request-process"


async def on_request_moved(
    delivery: Delivery[ev.RequestSubmitted | ev.RequestRetried], *, states: RequestStates
) -> None:
    """A submitted or retried request: dispatch its next action."""
    state = await states.load(delivery.event.request_id, conn=delivery.conn)
    await _append(delivery, states, state, decide_next(state))


async def on_report(delivery: Delivery[ev.ActionReport], *, states: RequestStates) -> None:
    """Fulfilment reported on an action: record it, and take the next step it allows."""
    state = await states.load(delivery.event.request_id, conn=delivery.conn)
    await _append(delivery, states, state, decide_report(state, delivery.event))


async def _append(
    delivery: Delivery,
    states: RequestStates,
    state: RequestState,
    decided: list[ev.RequestEvent],
) -> None:
    if decided:
        await states.store.append(
            stream_of(state.request_id),
            [delivery.caused(event, actor="pao") for event in decided],
            state.version,
            conn=delivery.conn,
        )


def handlers(states: RequestStates) -> Handlers:
    """The process manager's handlers, by the event they handle."""
    moved = partial(on_request_moved, states=states)
    reported = partial(on_report, states=states)
    return {
        ev.RequestSubmitted: moved,
        ev.RequestRetried: moved,
        **dict.fromkeys(ev.FULFILLMENT_EVENTS.values(), reported),
    }
