"""What fulfilment does when a request event arrives: remember the request, run a dispatched
action, stop an aborted request's work, tell a ticket of an escalation."""

from __future__ import annotations

from pao.contracts import events as ev
from pao.fulfillment import jobs, ledger, provisioning
from pao.shared.consumer import Delivery, Handlers

CONSUMER = "pao-fulfillment"

PRIORITY_FOR_URGENCY = {"low": "Low", "normal": "Medium", "high": "High", "critical": "Highest"}


async def on_submitted(delivery: Delivery[ev.RequestSubmitted]) -> None:
    """Keep what running the request's actions will need."""
    await ledger.open_request(
        delivery.conn,
        delivery.event,
        correlation_id=delivery.envelope.correlation_id,
        submitted_at=delivery.envelope.occurred_at,
    )


async def on_dispatched(delivery: Delivery[ev.ActionDispatched]) -> None:
    """Start a run of the action and queue its execution."""
    event = delivery.event
    if await ledger.start_run(delivery.conn, event):
        await jobs.schedule(
            delivery.conn,
            request_id=event.request_id,
            action=event.action,
            generation=event.generation,
            kind="execute",
            dedupe_key=f"execute:{event.request_id}:{event.action}:{event.generation}",
        )


async def on_apply_dispatched(delivery: Delivery[ev.ApplyDispatched]) -> None:
    """Queue the apply of the plan the request asked for (once per plan)."""
    event = delivery.event
    await jobs.schedule(
        delivery.conn,
        request_id=event.request_id,
        action=event.action,
        generation=event.generation,
        kind="apply",
        dedupe_key=f"apply:{event.request_id}:{event.action}:{event.generation}:{event.plan_id}",
        payload={"plan_id": event.plan_id},
    )


async def on_aborted(delivery: Delivery[ev.RequestAborted]) -> None:
    """Cancel the request's pending work and tell each open ticket that it is not needed."""
    event = delivery.event
    fulfillment = await ledger.mark_aborted(delivery.conn, event.request_id)
    await jobs.cancel_for_request(delivery.conn, event.request_id)
    await provisioning.forget_plans(delivery.conn, event.request_id)
    if fulfillment is None:
        return
    for run in fulfillment.runs.values():
        if run.status == "awaiting_manual" and run.ticket_key:
            await comment(
                delivery,
                run,
                f"PAO request {event.request_id} was aborted by {event.by}: "
                f"{event.reason}. No further work is needed on this issue.",
            )


async def on_failed(delivery: Delivery[ev.RequestFailed]) -> None:
    """A failed request applies none of its stored plans (a retry plans again)."""
    await provisioning.forget_plans(delivery.conn, delivery.event.request_id)


async def on_escalated(delivery: Delivery[ev.RequestEscalated]) -> None:
    """Raise the priority of the request's ticket (an open one first) and say why."""
    event = delivery.event
    fulfillment = await ledger.load(delivery.conn, event.request_id)
    if fulfillment is None:
        return
    tickets = [run for run in fulfillment.runs.values() if run.ticket_key]
    if tickets:
        open_first = min(tickets, key=lambda run: run.status != "awaiting_manual")
        await comment(
            delivery,
            open_first,
            f"Escalated to level {event.level} ({event.urgency}) by {event.by}: {event.reason}",
            priority=PRIORITY_FOR_URGENCY[event.urgency],
        )


async def comment(
    delivery: Delivery, run: ledger.Run, text: str, *, priority: str | None = None
) -> None:
    """Queue a comment on the run's ticket (and a new priority), once per event."""
    payload = {"key": run.ticket_key, "comment": text}
    if priority is not None:
        payload["priority"] = priority
    await jobs.schedule(
        delivery.conn,
        request_id=delivery.envelope.stream_id.removeprefix("request-"),
        action=run.action,
        generation=run.generation,
        kind="comment",
        dedupe_key=f"comment:{delivery.envelope.event_id}:{run.action}",
        payload=payload,
    )


HANDLERS: Handlers = {
    ev.RequestSubmitted: on_submitted,
    ev.ActionDispatched: on_dispatched,
    ev.ApplyDispatched: on_apply_dispatched,
    ev.RequestAborted: on_aborted,
    ev.RequestFailed: on_failed,
    ev.RequestEscalated: on_escalated,
}
