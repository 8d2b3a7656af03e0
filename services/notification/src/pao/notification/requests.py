"""Request events -> notices: what the notification service keeps of each request, and the
notices each event calls for, queued in the outbox in the consumer's transaction."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import asyncpg

from pao.contracts import events as ev
from pao.notification.notices import notices_for
from pao.notification.outbox import enqueue
from pao.notification.routing import NOTIFYING_EVENTS, Routing
from pao.notification.summary import RequestSummary
from pao.shared.consumer import Delivery, Handlers

CONSUMER = "pao-notification"

_COLUMNS = (
    "request_id, item_id, item_name, owner_team, requester_id, requester_name, requester_email, "
    "status, jira_key, jira_url, escalation_level"
)


@dataclass(frozen=True)
class Notifier:
    """Where notices go and what links in them point at."""

    routing: Routing
    gateway_url: str | None


async def on_submitted(delivery: Delivery[ev.RequestSubmitted]) -> None:
    """Remember who asked for what: later notices name them."""
    event = delivery.event
    await delivery.conn.execute(
        f"INSERT INTO notification_requests ({_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'submitted', NULL, NULL, 0) ON CONFLICT DO NOTHING",
        event.request_id,
        event.item_id,
        event.item_name,
        event.owner_team,
        event.requester.id,
        event.requester.name,
        event.requester.email,
    )


async def _summary(
    conn: asyncpg.Connection, request_id: str, notifier: Notifier
) -> RequestSummary | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM notification_requests WHERE request_id = $1", request_id
    )
    if row is None:
        return None
    values = dict(row)
    values["requester_name"] = values["requester_name"] or values["requester_id"]
    return RequestSummary(**values, gateway_url=notifier.gateway_url)


def _learnt(summary: RequestSummary, event: ev.RequestEvent) -> RequestSummary:
    """The summary once the event applies: the status it moves to, a ticket, a level."""
    status = (
        getattr(event, "request_status", None) or getattr(event, "status", None) or summary.status
    )
    match event:
        case ev.ActionAwaitingManual():
            return replace(summary, status=status, jira_key=event.key, jira_url=event.url)
        case ev.RequestEscalated():
            return replace(summary, status=status, escalation_level=event.level)
        case ev.RequestFailed():
            return replace(summary, status=status, reason=event.error)
        case ev.RequestAborted():
            return replace(summary, status=status, reason=event.reason)
    return replace(summary, status=status)


async def on_notifying(
    delivery: Delivery[ev.RequestEvent | ev.ResourceEvent], *, notifier: Notifier
) -> None:
    """Bring the request's summary up to date and queue the notices the event calls for."""
    event = delivery.event
    before = await _summary(delivery.conn, event.request_id, notifier)
    if before is None:
        return  # a request whose submission this service never saw
    after = _learnt(before, event)
    await delivery.conn.execute(
        "UPDATE notification_requests SET status = $2, jira_key = $3, jira_url = $4, "
        "escalation_level = $5 WHERE request_id = $1",
        after.request_id,
        after.status,
        after.jira_key,
        after.jira_url,
        after.escalation_level,
    )
    await enqueue(delivery.conn, notices_for(delivery.envelope, after, notifier.routing))


def handlers(notifier: Notifier) -> Handlers:
    """The submission, and each event the routing asks to notify about."""
    notify = partial(on_notifying, notifier=notifier)
    wanted = frozenset(notifier.routing.events) & NOTIFYING_EVENTS
    return {
        ev.RequestSubmitted: on_submitted,
        **{ev.ALL_EVENTS[name]: notify for name in sorted(wanted)},
    }
