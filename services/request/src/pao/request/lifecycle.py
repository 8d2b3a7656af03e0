"""Keeps each resource in step with the requests that work on it.

A create request's submission starts its resource's stream; the end of any request (completed,
failed, aborted) or its retry moves its resource on, as `resource.outcome` decides. Each is
appended in the consumer's transaction, so once per request event.
"""

from __future__ import annotations

from functools import partial

from pao.contracts import events as ev
from pao.request.resource import fold, outcome, started_by, stream_of
from pao.request.states import RequestStates
from pao.shared.consumer import Delivery, Handlers
from pao.shared.eventstore import read_stream

CONSUMER = "pao-request-resources"


async def on_submitted(delivery: Delivery[ev.RequestSubmitted], *, states: RequestStates) -> None:
    """A create request: its resource exists from now on, as provisioning."""
    submitted = delivery.event
    if submitted.kind != "create" or submitted.resource_id is None:
        return  # updates and decommissions moved their resource when they were submitted
    stream = stream_of(submitted.resource_id)
    if await read_stream(delivery.conn, stream, from_version=1):
        return
    await states.store.append(
        stream, [delivery.caused(started_by(submitted), actor="pao")], 0, conn=delivery.conn
    )


async def on_request_moved(delivery: Delivery[ev.RequestEvent], *, states: RequestStates) -> None:
    """A request ended or was retried: what that means for its resource."""
    request_id: str = delivery.event.request_id  # type: ignore[attr-defined]
    request = await states.load(request_id, conn=delivery.conn)
    submitted = request.submitted
    if submitted is None or submitted.resource_id is None:
        return
    stream = stream_of(submitted.resource_id)
    resource = fold(submitted.resource_id, await read_stream(delivery.conn, stream))
    decided = outcome(resource, submitted, delivery.event)
    if decided:
        await states.store.append(
            stream,
            [delivery.caused(event, actor="pao") for event in decided],
            resource.version,
            conn=delivery.conn,
        )


def handlers(states: RequestStates) -> Handlers:
    moved = partial(on_request_moved, states=states)
    return {
        ev.RequestSubmitted: partial(on_submitted, states=states),
        ev.RequestCompleted: moved,
        ev.RequestFailed: moved,
        ev.RequestAborted: moved,
        ev.RequestRetried: moved,
    }
