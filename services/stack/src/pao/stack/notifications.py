"""Wiring the notification service: request events -> notices in the outbox -> channels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.notification.channels import build_channels
from pao.notification.notices import notices_for
from pao.notification.outbox import OutboxSender, enqueue
from pao.notification.routing import NOTIFYING_EVENTS, Routing, load_routing
from pao.notification.summary import RequestSummary
from pao.request.aggregate import RequestState, fold, stream_of
from pao.shared.consumer import EventConsumer
from pao.shared.eventstore import EventStore

if TYPE_CHECKING:
    from pao.stack.runtime import _Scope

CONSUMER = "pao-notification"


def summary_of(state: RequestState, event: ev.Event, gateway_url: str | None) -> RequestSummary:
    """What a notice says about the request, as of this event."""
    submitted = state.submitted
    assert submitted is not None
    tickets = [a for a in state.actions if a.key]
    reason = None
    match event:
        case ev.RequestFailed():
            reason = event.error
        case ev.RequestAborted():
            reason = event.reason
        case ev.RequestEscalated():
            reason = f"{event.reason} (urgency {event.urgency})"
    return RequestSummary(
        request_id=state.request_id,
        item_id=submitted.item_id,
        item_name=submitted.item_name,
        owner_team=submitted.owner_team,
        requester_id=submitted.requester.id,
        requester_name=submitted.requester.name or submitted.requester.id,
        requester_email=submitted.requester.email,
        status=state.status or "submitted",
        jira_key=tickets[-1].key if tickets else None,
        jira_url=tickets[-1].url if tickets else None,
        escalation_level=state.escalation_level,
        reason=reason,
        gateway_url=gateway_url,
    )


async def plan_notices(
    conn: asyncpg.Connection,
    envelope: EventEnvelope,
    *,
    store: EventStore,
    routing: Routing,
    gateway_url: str | None,
) -> int:
    """Queue the notices an event calls for, in the consumer's transaction."""
    request_id = envelope.stream_id.removeprefix("request-")
    # The state as of this event, not as of now: a notice describes what just happened.
    history = await store.read_stream(stream_of(request_id), conn=conn)
    state = fold(request_id, [e for e in history if e.stream_version <= envelope.stream_version])
    if not state.exists:
        return 0
    summary = summary_of(state, ev.decode(envelope), gateway_url)
    return await enqueue(conn, notices_for(envelope, summary, routing))


async def start_notifications(scope: _Scope) -> None:
    """The notification consumer and the outbox sender."""
    from pao.stack.runtime import REQUEST_TOPIC

    settings = scope.settings
    routing = load_routing(settings.notifications_file)
    channels = build_channels(routing, await scope.session())
    gateway_url = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
    store = scope.store

    async def handle(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
        await plan_notices(conn, envelope, store=store, routing=routing, gateway_url=gateway_url)

    consumer = EventConsumer(
        scope.pool,
        settings,
        name=CONSUMER,
        topics=[REQUEST_TOPIC],
        handler=handle,
        producer=await scope.producer(),
        event_types=frozenset(routing.events) & NOTIFYING_EVENTS,
    )
    scope.spawn(CONSUMER, consumer.run(scope.stop))
    scope.spawn("notification-sender", OutboxSender(scope.pool, channels).run(scope.stop))
