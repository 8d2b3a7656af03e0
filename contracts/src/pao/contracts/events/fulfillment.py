"""Fulfilment events (stream `fulfillment-<request_id>`): what fulfilment did with an action.

The fulfilment service writes these alone; they report facts about one generation of one action
(a retry starts a new generation). The request service reads them from `pao.fulfillment.events`
and its aggregate decides what they mean for the request.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pao.contracts.events.base import REGISTRY, Event
from pao.contracts.events.request import PlanSummary


def fulfillment_stream(request_id: str) -> str:
    """The stream in which fulfilment records its work on a request."""
    return f"fulfillment-{request_id}"


class ActionReport(Event):
    """Base of fulfilment's reports: about which action of which request, and which run."""

    category: ClassVar[str] = "fulfillment"
    request_id: str
    action: str
    generation: int = 0


class ExecutionStarted(ActionReport):
    """An attempt of the action began, with its rendered spec (secrets masked)."""

    event_type: ClassVar[str] = "ExecutionStarted"
    action_type: str
    attempt: int
    spec: dict[str, Any]


class ExecutionPlanned(ActionReport):
    """A Terraform plan of the action is stored; nothing was applied yet."""

    event_type: ClassVar[str] = "ExecutionPlanned"
    plan: PlanSummary
    #: the stored plan this one replaces because it no longer applied
    replaces: str | None = None


class ExecutionApplying(ActionReport):
    """An attempt to apply a stored plan began."""

    event_type: ClassVar[str] = "ExecutionApplying"
    plan_id: str
    attempt: int


class ExecutionLogged(ActionReport):
    """A line of the action's own output as it runs (secrets redacted)."""

    event_type: ClassVar[str] = "ExecutionLogged"
    level: str
    message: str
    address: str | None = None


class ManualTicketOpened(ActionReport):
    """The action's ticket exists (created now, or found again by its label)."""

    event_type: ClassVar[str] = "ManualTicketOpened"
    system: str
    key: str
    url: str


class ExecutionRetryScheduled(ActionReport):
    """An attempt failed for a reason that may pass; the next one is due at `next_attempt_at`."""

    event_type: ClassVar[str] = "ExecutionRetryScheduled"
    attempt: int
    error: str
    next_attempt_at: str


class ExecutionSucceeded(ActionReport):
    """The action is done; its outputs."""

    event_type: ClassVar[str] = "ExecutionSucceeded"
    outputs: dict[str, Any]


class ExecutionSkipped(ActionReport):
    """The action's `when` condition was false, so it did not run."""

    event_type: ClassVar[str] = "ExecutionSkipped"
    reason: str


class ExecutionFailed(ActionReport):
    """The action failed for good: a permanent error, a rejected ticket, or attempts used up."""

    event_type: ClassVar[str] = "ExecutionFailed"
    error: str
    attempts: int


class TicketCommented(ActionReport):
    """PAO wrote to the action's ticket: a comment, and for escalations a new priority."""

    event_type: ClassVar[str] = "TicketCommented"
    key: str
    comment: str
    priority: str | None = None


FULFILLMENT_EVENTS = REGISTRY.register(
    ExecutionStarted,
    ExecutionPlanned,
    ExecutionApplying,
    ExecutionLogged,
    ManualTicketOpened,
    ExecutionRetryScheduled,
    ExecutionSucceeded,
    ExecutionSkipped,
    ExecutionFailed,
    TicketCommented,
)
