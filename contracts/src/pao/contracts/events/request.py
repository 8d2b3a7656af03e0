"""Request events (stream `request-<request_id>`): what the request aggregate decided.

The request service writes these alone. What fulfilment reports about an action (on its own
stream) reaches a request only through the aggregate, which records it here in the request's terms
(`ActionStarted`, `ActionSucceeded`, ...) and decides what follows (`ActionDispatched`,
`RequestCompleted`, `FallbackStarted`, `RequestFailed`).

`request_status` names the status a request moves to when the event applies (None: unchanged);
the request aggregate adds the one rule on top (an ended request stays ended, but a retry reopens
a failed one).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from pao.contracts.events.base import REGISTRY, Event, Payload
from pao.contracts.events.catalog import item_hash

#: The name of the manual action an item's fallback adds.
FALLBACK = "fallback"
#: The name of the one action an automated item runs in manual mode (its fallback's ticket).
MANUAL = "manual"


class Requester(BaseModel):
    """Who asked: their user id, name, e-mail and teams at the time of the request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str | None = None
    email: str | None = None
    teams: list[str] = []


class Approvers(BaseModel):
    """Who may approve: named users, members of teams, holders of roles."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    users: list[str] = []
    teams: list[str] = []
    roles: list[str] = []


class ApprovalPolicy(BaseModel):
    """An approval the item's policy asks for on this request (its environment and kind were
    already checked at submission). `needed`: one approver (`any`) or every named user plus one
    member of each team and one holder of each role (`all`). `changes`: for a Terraform action,
    only when its plan makes one of these changes (e.g. `delete`, `replace`); empty: always."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approvers: Approvers
    needed: Literal["any", "all"] = "any"
    changes: list[str] = []


class PlannedAction(BaseModel):
    """One action of the pinned item, in the order it runs, with its approval if one applies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    approval: ApprovalPolicy | None = None


class PlanSummary(BaseModel):
    """What a Terraform plan would do: counts and each resource's change (sensitive values
    masked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan_id: str
    destroy: bool = False
    counts: dict[str, int]
    changes: list[dict[str, Any]]
    #: how many changes were left out of `changes` (a very large plan is summarised)
    truncated: int = 0


class RequestEvent(Event):
    category: ClassVar[str] = "request"
    request_status: ClassVar[str | None] = None


class RequestSubmitted(RequestEvent):
    """A developer asked for a catalog item, pinned by id, version and content hash.

    The item's definition stays in the catalog stream (`CatalogItemPublished` / `Updated` with
    that hash); the event carries what every consumer needs: the actions in order and whether the
    item falls back to a manual ticket. `kind` says what the request does to its resource
    (`resource_id`): create it, update it with new inputs, or decommission it. `approval` is
    the approval the whole request waits for before its first action, if the policy asks one.
    `mode` is the fulfilment mode the request runs in, pinned for its whole life (None in events
    written before modes were recorded: the item's default). An update or a decommission carries
    the outputs its resource's earlier requests recorded (`resource_outputs`, by action), which
    its templates see as `resource.outputs`.
    """

    event_type: ClassVar[str] = "RequestSubmitted"
    schema_version: ClassVar[int] = 3
    request_status: ClassVar[str | None] = "submitted"
    request_id: str
    item_id: str
    item_version: str
    item_hash: str
    item_name: str
    owner_team: str
    actions: list[PlannedAction]
    manual_fallback: bool = False
    inputs: dict[str, Any]
    resolved_inputs: dict[str, Any]
    environment: str
    requester: Requester
    idempotency_key: str | None = None
    kind: Literal["create", "update", "decommission"] = "create"
    resource_id: str | None = None
    approval: ApprovalPolicy | None = None
    #: when the resource is to be decommissioned by itself (ISO 8601), if ever
    expires_at: str | None = None
    #: why (for a decommission)
    reason: str | None = None
    mode: Literal["automated", "manual"] | None = None
    resource_outputs: dict[str, dict[str, Any]] = {}


class ActionDispatched(RequestEvent):
    """The request asks fulfilment to run this action now (its first run, the next one, a
    retry's new generation, or the manual fallback)."""

    event_type: ClassVar[str] = "ActionDispatched"
    request_id: str
    action: str
    action_type: str
    generation: int = 0


class ActionPlanned(RequestEvent):
    """A Terraform action's plan is ready (stored by fulfilment, applied only as planned)."""

    event_type: ClassVar[str] = "ActionPlanned"
    request_id: str
    action: str
    plan: PlanSummary
    #: the plan this one replaces because it no longer applied (state moved on)
    replaces: str | None = None


class ApplyDispatched(RequestEvent):
    """The request asks fulfilment to apply exactly this plan of the action."""

    event_type: ClassVar[str] = "ApplyDispatched"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    action: str
    generation: int = 0
    plan_id: str


class ActionApplying(RequestEvent):
    """Fulfilment began applying a plan (an attempt of it)."""

    event_type: ClassVar[str] = "ActionApplying"
    request_id: str
    action: str
    plan_id: str
    attempt: int


class ActionLogged(RequestEvent):
    """A line of an action's own output while it runs (Terraform's progress, diagnostics)."""

    event_type: ClassVar[str] = "ActionLogged"
    request_id: str
    action: str
    level: str
    message: str
    address: str | None = None


class ApprovalRequested(RequestEvent):
    """The request waits for approval: of the whole request (`action` None), of an action
    before it runs, or of a Terraform action's plan (`plan_id`)."""

    event_type: ClassVar[str] = "ApprovalRequested"
    request_status: ClassVar[str | None] = "awaiting_approval"
    request_id: str
    action: str | None = None
    plan_id: str | None = None
    policy: ApprovalPolicy


class ApprovalDecided(RequestEvent):
    """One approver's decision, with who, why and on what."""

    event_type: ClassVar[str] = "ApprovalDecided"
    request_id: str
    action: str | None = None
    plan_id: str | None = None
    by: str
    by_teams: list[str] = []
    by_roles: list[str] = []
    decision: Literal["approved", "rejected"]
    comment: str | None = None


class ApprovalGranted(RequestEvent):
    """Enough approvers said yes; the request goes on."""

    event_type: ClassVar[str] = "ApprovalGranted"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    action: str | None = None
    plan_id: str | None = None


class ActionStarted(RequestEvent):
    """Fulfilment began an action (or an attempt of it)."""

    event_type: ClassVar[str] = "ActionStarted"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    action: str
    action_type: str
    attempt: int
    spec: dict[str, Any]


class ActionAwaitingManual(RequestEvent):
    """A manual step is open (a JIRA issue) and PAO now waits for people to finish it."""

    event_type: ClassVar[str] = "ActionAwaitingManual"
    request_status: ClassVar[str | None] = "awaiting_manual"
    request_id: str
    action: str
    system: str
    key: str
    url: str


class ActionSucceeded(RequestEvent):
    """An action finished; its outputs are available to later actions."""

    event_type: ClassVar[str] = "ActionSucceeded"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    action: str
    outputs: dict[str, Any]


class ActionSkipped(RequestEvent):
    """An action's `when` condition was false."""

    event_type: ClassVar[str] = "ActionSkipped"
    request_id: str
    action: str
    reason: str


class ActionRetryScheduled(RequestEvent):
    """A transient failure; the action runs again at `next_attempt_at`."""

    event_type: ClassVar[str] = "ActionRetryScheduled"
    request_id: str
    action: str
    attempt: int
    error: str
    next_attempt_at: str


class ActionFailed(RequestEvent):
    """An action failed for good (a rejection, a permanent error, or retries used up)."""

    event_type: ClassVar[str] = "ActionFailed"
    request_id: str
    action: str
    error: str
    attempts: int


class ManualTicketUpdated(RequestEvent):
    """PAO wrote to a manual step's ticket: a comment, and for escalations a new priority."""

    event_type: ClassVar[str] = "ManualTicketUpdated"
    request_id: str
    action: str
    key: str
    comment: str
    priority: str | None = None


class FallbackStarted(RequestEvent):
    """An automated action failed for good and the item falls back to a manual ticket."""

    event_type: ClassVar[str] = "FallbackStarted"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    failed_action: str
    error: str


class RequestCompleted(RequestEvent):
    """Every action succeeded (or was skipped)."""

    event_type: ClassVar[str] = "RequestCompleted"
    request_status: ClassVar[str | None] = "completed"
    request_id: str
    outputs: dict[str, dict[str, Any]]


class RequestFailed(RequestEvent):
    """An action failed for good; the request stops until retried."""

    event_type: ClassVar[str] = "RequestFailed"
    request_status: ClassVar[str | None] = "failed"
    request_id: str
    action: str
    error: str


class RequestRetried(RequestEvent):
    """Someone asked to run the failed actions again; succeeded ones are not repeated."""

    event_type: ClassVar[str] = "RequestRetried"
    request_status: ClassVar[str | None] = "in_progress"
    request_id: str
    by: str
    actions: list[str]


class RequestAborted(RequestEvent):
    """Someone stopped the request; no further action runs."""

    event_type: ClassVar[str] = "RequestAborted"
    request_status: ClassVar[str | None] = "aborted"
    request_id: str
    by: str
    reason: str


class RequestEscalated(RequestEvent):
    """Someone escalated the request to the owning team, at a new level; `status` is the
    request's status when it was escalated (None in events written before it was recorded)."""

    event_type: ClassVar[str] = "RequestEscalated"
    schema_version: ClassVar[int] = 2
    request_id: str
    by: str
    reason: str
    urgency: str
    level: int
    status: str | None = None


REQUEST_EVENTS = REGISTRY.register(
    RequestSubmitted,
    ActionDispatched,
    ActionPlanned,
    ApplyDispatched,
    ActionApplying,
    ActionLogged,
    ApprovalRequested,
    ApprovalDecided,
    ApprovalGranted,
    ActionStarted,
    ActionAwaitingManual,
    ActionSucceeded,
    ActionSkipped,
    ActionRetryScheduled,
    ActionFailed,
    ManualTicketUpdated,
    FallbackStarted,
    RequestCompleted,
    RequestFailed,
    RequestRetried,
    RequestAborted,
    RequestEscalated,
)


@REGISTRY.upcaster("RequestSubmitted", 1)
def _pin_the_item(data: Payload) -> Payload:
    """Version 1 carried the whole item definition; version 2 pins it by its content hash
    (the catalog stream holds the definition) and keeps what consumers need of it."""
    upcast = dict(data)
    item = upcast.pop("item")
    fulfillment = item.get("fulfillment") or {}
    upcast["item_hash"] = item_hash(item)
    upcast["actions"] = [
        {"name": a["name"], "type": a["type"]} for a in fulfillment.get("actions") or []
    ]
    upcast["manual_fallback"] = (fulfillment.get("fallback") or {}).get("strategy") == "manual"
    return upcast


@REGISTRY.upcaster("RequestEscalated", 1)
def _status_unknown(data: Payload) -> Payload:
    """Version 1 did not record the request's status at the escalation."""
    return {**data, "status": None}


@REGISTRY.upcaster("RequestSubmitted", 2)
def _creates_without_resource(data: Payload) -> Payload:
    """Version 2 requests created something and knew no resources, approvals or expiry."""
    return {**data, "kind": "create", "resource_id": None, "approval": None, "expires_at": None}
