"""The resource aggregate: what a request made, folded from its stream, and what may change it.

A resource starts with the create request that makes it. Each later change is a request of its
own (`update`, `decommission`) that may start only from a state that allows it; that transition
is appended with the resource's stream version, so two changes cannot start at once. When a
request ends, `outcome` says what it means for its resource. No I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope

#: States from which a resource may be changed by a new request.
UPDATABLE = frozenset({"active", "failed"})
DECOMMISSIONABLE = frozenset({"active", "failed"})
#: The state a resource is in while a request of each kind works on it.
WORKING = {"create": "provisioning", "update": "updating", "decommission": "decommissioning"}
STATES = (
    "provisioning",
    "active",
    "updating",
    "decommissioning",
    "decommissioned",
    "failed",
)


@dataclass
class ResourceState:
    """A resource folded from its stream."""

    resource_id: str
    version: int = 0
    state: str | None = None
    item_id: str = ""
    item_version: str = ""
    item_hash: str = ""
    item_name: str = ""
    owner_team: str = ""
    owner: str = ""
    environment: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    #: the latest outputs each action recorded in the resource's requests
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    expires_at: str | None = None
    expiry_noticed: str | None = None
    last_request_id: str = ""
    note: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def exists(self) -> bool:
        return self.state is not None

    def apply(self, envelope: EventEnvelope) -> None:
        """Fold one stored event of the resource's stream (one already folded is skipped)."""
        if envelope.stream_version <= self.version:
            return
        self.version = envelope.stream_version
        event = ev.decode(envelope)
        assert isinstance(event, ev.ResourceEvent)
        at = envelope.occurred_at.isoformat()
        self.updated_at = at
        if event.resource_state is not None:
            self.state = event.resource_state
        self.last_request_id = event.request_id
        match event:
            case ev.ResourceProvisioning():
                self.created_at = at
                self.item_id, self.item_version = event.item_id, event.item_version
                self.item_hash, self.item_name = event.item_hash, event.item_name
                self.owner_team, self.owner = event.owner_team, event.owner
                self.environment, self.inputs = event.environment, event.inputs
                self.expires_at = event.expires_at
            case ev.ResourceUpdating():
                self.note = None
            case ev.ResourceDecommissioning():
                self.note = None
            case ev.ResourceResumed():
                self.state, self.note = event.state, None
            case ev.ResourceActivated():
                # Outputs accumulate by action: an update that skips an action, or that ran
                # as a manual ticket, leaves what the action recorded before (a teardown
                # needs the id the create was given).
                self.inputs, self.outputs = event.inputs, {**self.outputs, **event.outputs}
                self.item_version, self.note = event.item_version, None
            case ev.ResourceFailed():
                self.note = event.note or event.error
            case ev.ResourceExpiring():
                self.expiry_noticed = event.expires_at
            case _:
                pass

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceState:
        return cls(**data)


def stream_of(resource_id: str) -> str:
    return ev.resource_stream(resource_id)


def fold(resource_id: str, envelopes: list[EventEnvelope]) -> ResourceState:
    state = ResourceState(resource_id)
    for envelope in envelopes:
        state.apply(envelope)
    return state


class ChangeRefused(Exception):
    """The resource's state does not allow the change; the message says why."""


def decide_change(
    state: ResourceState,
    *,
    kind: str,
    request_id: str,
    by: str,
    inputs: dict[str, Any],
    item_version: str,
    item_hash: str,
    reason: str | None = None,
) -> ev.ResourceEvent:
    """The transition a new update or decommission request starts."""
    if kind == "update":
        if state.state not in UPDATABLE:
            raise ChangeRefused(
                f"resource {state.resource_id} is {state.state}; only an active or failed "
                "resource can be updated"
            )
        return ev.ResourceUpdating(
            resource_id=state.resource_id,
            request_id=request_id,
            by=by,
            inputs=inputs,
            item_version=item_version,
            item_hash=item_hash,
        )
    if state.state not in DECOMMISSIONABLE:
        raise ChangeRefused(
            f"resource {state.resource_id} is {state.state}; only an active or failed resource "
            "can be decommissioned"
        )
    return ev.ResourceDecommissioning(
        resource_id=state.resource_id,
        request_id=request_id,
        by=by,
        reason=reason or f"decommissioned by {by}",
    )


def started_by(submitted: ev.RequestSubmitted) -> ev.ResourceProvisioning:
    """The first event of the resource a create request makes."""
    assert submitted.resource_id is not None
    return ev.ResourceProvisioning(
        resource_id=submitted.resource_id,
        request_id=submitted.request_id,
        item_id=submitted.item_id,
        item_version=submitted.item_version,
        item_hash=submitted.item_hash,
        item_name=submitted.item_name,
        owner_team=submitted.owner_team,
        owner=submitted.requester.id,
        environment=submitted.environment,
        inputs=submitted.resolved_inputs,
        expires_at=submitted.expires_at,
    )


def outcome(
    state: ResourceState, submitted: ev.RequestSubmitted, event: ev.RequestEvent
) -> list[ev.ResourceEvent]:
    """What the end (or retry) of a request means for its resource; nothing when the resource
    has moved on to another request meanwhile, or already shows this outcome."""
    if not state.exists or state.last_request_id != submitted.request_id:
        return []
    ids = {"resource_id": state.resource_id, "request_id": submitted.request_id}
    working = WORKING[submitted.kind]
    match event:
        case ev.RequestCompleted() if state.state == working:
            if submitted.kind == "decommission":
                return [ev.ResourceDecommissioned(**ids)]
            return [
                ev.ResourceActivated(
                    **ids,
                    inputs=submitted.resolved_inputs,
                    outputs=event.outputs,
                    item_version=submitted.item_version,
                )
            ]
        case ev.RequestFailed() if state.state == working:
            return [ev.ResourceFailed(**ids, error=f"{event.action}: {event.error}")]
        case ev.RequestAborted() if state.state in (working, "failed"):
            note = (
                f"{submitted.kind} aborted by {event.by} ({event.reason}); what it had done "
                "so far stays: update or decommission the resource to settle it"
            )
            if state.state == "failed" and state.note == note:
                return []
            return [ev.ResourceFailed(**ids, error=f"aborted: {event.reason}", note=note)]
        case ev.RequestRetried() if state.state == "failed":
            return [ev.ResourceResumed(**ids, state=working)]
    return []
