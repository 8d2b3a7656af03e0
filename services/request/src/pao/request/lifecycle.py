"""Keeps each resource in step with the requests that work on it.

A create request's submission starts its resource's stream; the end of any request (completed,
failed, aborted) or its retry moves its resource on, as `resource.outcome` decides. Each is
appended in the consumer's transaction, so once per request event. The request metrics
(submitted, finished, time to finish) are counted here too, once per event, whichever part of
PAO appended it.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from pao.contracts import events as ev
from pao.request.resource import fold, outcome, started_by, stream_of
from pao.request.states import RequestStates
from pao.shared import metrics
from pao.shared.consumer import Delivery, Handlers
from pao.shared.eventstore import read_stream

CONSUMER = "pao-request-resources"


async def on_submitted(delivery: Delivery[ev.RequestSubmitted], *, states: RequestStates) -> None:
    """A create request: its resource exists from now on, as provisioning."""
    submitted = delivery.event
    metrics.REQUESTS_SUBMITTED.labels(item=submitted.item_id).inc()
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
    if submitted is not None and delivery.event.request_status in (
        "completed",
        "failed",
        "aborted",
    ):
        _count_finished(submitted, request.submitted_at, delivery)
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


def _count_finished(
    submitted: ev.RequestSubmitted, submitted_at: str | None, delivery: Delivery
) -> None:
    status = delivery.event.request_status
    metrics.REQUESTS_FINISHED.labels(item=submitted.item_id, status=status).inc()
    if submitted_at is not None:
        took = delivery.envelope.occurred_at - datetime.fromisoformat(submitted_at)
        metrics.REQUEST_DURATION.labels(
            item=submitted.item_id, mode=submitted.mode or "unknown", status=status
        ).observe(max(took.total_seconds(), 0.0))


def handlers(states: RequestStates) -> Handlers:
    moved = partial(on_request_moved, states=states)
    return {
        ev.RequestSubmitted: partial(on_submitted, states=states),
        ev.RequestCompleted: moved,
        ev.RequestFailed: moved,
        ev.RequestAborted: moved,
        ev.RequestRetried: moved,
    }
