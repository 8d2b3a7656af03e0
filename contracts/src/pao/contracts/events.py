"""Domain events: past tense, frozen, versioned. The payload (`data`) of an EventEnvelope.

An event's fields never change once released; a change is a new `schema_version` plus an
upcaster in the consumer. Each class names its `event_type` and `schema_version`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pao.contracts.envelope import EventEnvelope, NewEvent


class Event(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def new(
        self,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
    ) -> NewEvent:
        """This payload wrapped for appending."""
        return NewEvent(
            event_type=self.event_type,
            schema_version=self.schema_version,
            data=self.model_dump(mode="json"),
            correlation_id=correlation_id,
            causation_id=causation_id,
            actor=actor,
        )


# --- catalog (stream `catalog`) -------------------------------------------------------------------


class CatalogItemPublished(Event):
    """An item appeared in the catalog."""

    event_type: ClassVar[str] = "CatalogItemPublished"
    item_id: str
    version: str
    path: str
    item: dict[str, Any]


class CatalogItemUpdated(Event):
    """An item's definition changed."""

    event_type: ClassVar[str] = "CatalogItemUpdated"
    item_id: str
    previous_version: str
    version: str
    path: str
    item: dict[str, Any]


class CatalogItemRemoved(Event):
    """An item left the catalog; requests made against it keep their pinned version."""

    event_type: ClassVar[str] = "CatalogItemRemoved"
    item_id: str
    last_version: str


class CatalogBundlePublished(Event):
    """A bundle appeared or changed."""

    event_type: ClassVar[str] = "CatalogBundlePublished"
    bundle_id: str
    version: str
    bundle: dict[str, Any]


class CatalogBundleRemoved(Event):
    """A bundle left the catalog."""

    event_type: ClassVar[str] = "CatalogBundleRemoved"
    bundle_id: str


class CatalogRefreshed(Event):
    """A refresh found a valid catalog that differs from the one served; closes its changes."""

    event_type: ClassVar[str] = "CatalogRefreshed"
    catalog_version: str
    previous_version: str | None
    source: str
    revision: str | None
    added: list[str]
    updated: list[str]
    removed: list[str]


class CatalogRefreshFailed(Event):
    """A refresh found problems; the last good catalog stays served."""

    event_type: ClassVar[str] = "CatalogRefreshFailed"
    source: str
    revision: str | None
    kept_version: str | None
    problems: list[dict[str, Any]]


# --- requests (stream `request-<request_id>`) ---------------------------------------------------


class Requester(BaseModel):
    """Who asked: their user id, name, e-mail and teams at the time of the request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str | None = None
    email: str | None = None
    teams: list[str] = []


class RequestSubmitted(Event):
    """A developer asked for a catalog item; the item's definition is pinned at this version."""

    event_type: ClassVar[str] = "RequestSubmitted"
    request_id: str
    item_id: str
    item_version: str
    item_name: str
    owner_team: str
    item: dict[str, Any]
    inputs: dict[str, Any]
    resolved_inputs: dict[str, Any]
    environment: str
    requester: Requester
    idempotency_key: str | None = None


class ActionStarted(Event):
    """The fulfilment began an action (or an attempt of it)."""

    event_type: ClassVar[str] = "ActionStarted"
    request_id: str
    action: str
    action_type: str
    attempt: int
    spec: dict[str, Any]


class ActionAwaitingManual(Event):
    """A manual step is open (a JIRA issue) and PAO now waits for people to finish it."""

    event_type: ClassVar[str] = "ActionAwaitingManual"
    request_id: str
    action: str
    system: str
    key: str
    url: str


class ActionSucceeded(Event):
    """An action finished; its outputs are available to later actions."""

    event_type: ClassVar[str] = "ActionSucceeded"
    request_id: str
    action: str
    outputs: dict[str, Any]


class ActionSkipped(Event):
    """An action's `when` condition was false."""

    event_type: ClassVar[str] = "ActionSkipped"
    request_id: str
    action: str
    reason: str


class ActionRetryScheduled(Event):
    """A transient failure; the action runs again at `next_attempt_at`."""

    event_type: ClassVar[str] = "ActionRetryScheduled"
    request_id: str
    action: str
    attempt: int
    error: str
    next_attempt_at: str


class ActionFailed(Event):
    """An action failed for good (a rejection, a permanent error, or retries used up)."""

    event_type: ClassVar[str] = "ActionFailed"
    request_id: str
    action: str
    error: str
    attempts: int


class ManualTicketUpdated(Event):
    """PAO wrote to a manual step's ticket: a comment, and for escalations a new priority."""

    event_type: ClassVar[str] = "ManualTicketUpdated"
    request_id: str
    action: str
    key: str
    comment: str
    priority: str | None = None


class FallbackStarted(Event):
    """An automated action failed for good and the item falls back to a manual ticket."""

    event_type: ClassVar[str] = "FallbackStarted"
    request_id: str
    failed_action: str
    error: str


class RequestCompleted(Event):
    """Every action succeeded (or was skipped)."""

    event_type: ClassVar[str] = "RequestCompleted"
    request_id: str
    outputs: dict[str, dict[str, Any]]


class RequestFailed(Event):
    """An action failed for good; the request stops until retried."""

    event_type: ClassVar[str] = "RequestFailed"
    request_id: str
    action: str
    error: str


class RequestRetried(Event):
    """Someone asked to run the failed actions again; succeeded ones are not repeated."""

    event_type: ClassVar[str] = "RequestRetried"
    request_id: str
    by: str
    actions: list[str]


class RequestAborted(Event):
    """Someone stopped the request; no further action runs."""

    event_type: ClassVar[str] = "RequestAborted"
    request_id: str
    by: str
    reason: str


class RequestEscalated(Event):
    """Someone escalated the request to the owning team, at a new level."""

    event_type: ClassVar[str] = "RequestEscalated"
    request_id: str
    by: str
    reason: str
    urgency: str
    level: int


REQUEST_EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        RequestSubmitted,
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
}

CATALOG_EVENTS: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        CatalogItemPublished,
        CatalogItemUpdated,
        CatalogItemRemoved,
        CatalogBundlePublished,
        CatalogBundleRemoved,
        CatalogRefreshed,
        CatalogRefreshFailed,
    )
}

ALL_EVENTS: dict[str, type[Event]] = {**CATALOG_EVENTS, **REQUEST_EVENTS}


def decode(envelope: EventEnvelope) -> Event:
    """The typed payload of a stored event."""
    cls = ALL_EVENTS.get(envelope.event_type)
    if cls is None:
        raise KeyError(f"unknown event type {envelope.event_type!r}")
    return cls.model_validate(envelope.data)
