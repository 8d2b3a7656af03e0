"""A request's past, from its events: the query behind `GET /requests/{id}/history` and
`GET /requests/{id}?as_of=`.

Both read the request's own stream (`request-<id>`) and fold it through the request aggregate,
the one place that knows how an event changes a request; nothing here decides what an event
means. The stream is the whole story: fulfilment's reports are recorded in it as the request's
own events (`ActionStarted`, `ActionSucceeded`, ...), so the `fulfillment-<id>` stream, which
holds the same facts, is not read twice. These are reads a person asks for about one request,
not the hot path, so folding a stream of tens of events here is cheap; every other read stays on
the read models.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from itertools import takewhile
from typing import Any

from pao.contracts import errors
from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.history import FieldChange, HistoryEntry
from pao.request.aggregate import RequestState, stream_of
from pao.request.projection import describe
from pao.request.queries import approval_view
from pao.shared.eventstore import EventStore


async def events_until(
    store: EventStore, request_id: str, as_of: datetime | None
) -> list[EventEnvelope]:
    """The request's events in stream order, up to `as_of` (all of them without it).

    The cut is a prefix of the stream: the request as it stood at that instant is what its
    events so far made of it, even were a later event stamped a moment earlier.
    """
    envelopes = await store.read_stream(stream_of(request_id))
    if as_of is None:
        return envelopes
    kept = list(takewhile(lambda e: e.occurred_at <= as_of, envelopes))
    if not kept:
        submitted = envelopes[0].occurred_at.isoformat() if envelopes else "later"
        raise PaoError(
            errors.REQUEST_NOT_FOUND,
            f"request {request_id} did not exist yet at {as_of.isoformat()}; it was submitted "
            f"at {submitted}",
            details=[ErrorDetail(field="as_of", message="before the request was submitted")],
        )
    return kept


def request_view(state: RequestState) -> dict[str, Any]:
    """A folded request in the shape `GET /requests/{id}` answers with."""
    submitted = state.submitted
    assert submitted is not None
    return {
        "request_id": state.request_id,
        "item_id": submitted.item_id,
        "item_version": submitted.item_version,
        "item_name": submitted.item_name,
        "owner_team": submitted.owner_team,
        "requester": submitted.requester.id,
        "environment": submitted.environment,
        "status": state.status,
        "escalation_level": state.escalation_level,
        "created_at": state.submitted_at,
        "updated_at": state.updated_at,
        "finished_at": state.finished_at,
        "last_error": state.last_error,
        "kind": submitted.kind,
        "resource_id": submitted.resource_id,
        "inputs": submitted.resolved_inputs,
        "correlation_id": state.correlation_id,
        "stream_version": state.version,
        "mode": submitted.mode,
        "approval": approval_view(state.approvals[-1]) if state.approvals else None,
        "has_plan": bool(state.plans),
        "escalations": [asdict(e) for e in state.escalations],
        "requester_details": submitted.requester.model_dump(),
        "actions": [
            {
                "name": a.name,
                "type": a.type,
                "status": a.status,
                "attempts": a.attempts,
                "outputs": {**({"key": a.key, "url": a.url} if a.key else {}), **a.outputs},
                "error": a.error,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
            }
            for a in state.actions
        ],
    }


def _facts(state: RequestState) -> dict[str, Any]:
    """What a person follows of a request, flat, so that two of them compare field by field."""
    if state.submitted is None:
        return {}
    facts: dict[str, Any] = {
        "status": state.status,
        "inputs": state.submitted.resolved_inputs,
        "environment": state.submitted.environment,
        "item_version": state.submitted.item_version,
        "escalation_level": state.escalation_level,
        "last_error": state.last_error,
        "fallback_for": state.fallback_for,
    }
    for action in state.actions:
        at = f"actions.{action.name}"
        facts |= {
            f"{at}.status": action.status,
            f"{at}.attempts": action.attempts,
            f"{at}.error": action.error,
            f"{at}.outputs": action.outputs or None,
            f"{at}.ticket": action.key,
            f"{at}.plan_id": action.plan_id,
        }
    for approval in state.approvals:
        what = approval.action or "request"
        facts[f"approval.{what}" + (f".{approval.plan_id}" if approval.plan_id else "")] = (
            approval.state
        )
    return facts


def _summary(event: ev.Event) -> str:
    match event:
        case ev.ActionDispatched():
            return f"{event.action} ({event.action_type}) handed to fulfilment"
        case ev.ApplyDispatched():
            return f"{event.action}: plan {event.plan_id} handed to fulfilment to apply"
    return describe(event)[1]


def history_of(request_id: str, envelopes: list[EventEnvelope]) -> list[HistoryEntry]:
    """Each event with the fields it changed, folded in stream order through the aggregate."""
    state = RequestState(request_id)
    entries = []
    for envelope in envelopes:
        before = _facts(state)
        state.apply(envelope)
        after = _facts(state)
        changes = {
            name: FieldChange(before=before.get(name), after=after.get(name))
            for name in after.keys() | before.keys()
            if before.get(name) != after.get(name)
        }
        entries.append(
            HistoryEntry(
                seq=envelope.stream_version,
                at=envelope.occurred_at,
                event_type=envelope.event_type,
                actor=envelope.actor,
                correlation_id=envelope.correlation_id,
                summary=_summary(ev.decode(envelope)),
                changes=dict(sorted(changes.items())),
            )
        )
    return entries


async def request_as_of(store: EventStore, request_id: str, as_of: datetime) -> dict[str, Any]:
    """The request exactly as its events had made it at `as_of`."""
    state = RequestState(request_id)
    for envelope in await events_until(store, request_id, as_of):
        state.apply(envelope)
    return {**request_view(state), "as_of": as_of.isoformat()}
