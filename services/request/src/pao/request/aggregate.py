"""The request aggregate: rebuilt from its events, it decides what a command may do. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope

Status = Literal["submitted", "in_progress", "awaiting_manual", "completed", "failed", "aborted"]
ActionStatus = Literal[
    "pending", "running", "awaiting_manual", "retrying", "succeeded", "skipped", "failed"
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "aborted"})


#: The request status each event moves to (None: unchanged); an ended request stays ended,
#: except that a retry reopens a failed one.
_STATUS_AFTER: dict[str, Status | None] = {
    "RequestSubmitted": "submitted",
    "ActionStarted": "in_progress",
    "ActionAwaitingManual": "awaiting_manual",
    "ActionSucceeded": "in_progress",
    "RequestCompleted": "completed",
    "RequestFailed": "failed",
    "RequestAborted": "aborted",
    "RequestRetried": "in_progress",
    "FallbackStarted": "in_progress",
}

#: The name of the manual action an item's fallback adds.
FALLBACK = "fallback"


def next_status(current: str | None, event_type: str) -> str | None:
    """The status a request has after an event of `event_type`."""
    target = _STATUS_AFTER.get(event_type)
    if target is None:
        return current
    if current in TERMINAL and not (current == "failed" and event_type == "RequestRetried"):
        return current
    return target


def stream_of(request_id: str) -> str:
    """The event stream of a request."""
    return f"request-{request_id}"


@dataclass
class ActionState:
    """Where one action of the request stands."""

    name: str
    type: str
    status: ActionStatus = "pending"
    attempts: int = 0
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    key: str | None = None
    url: str | None = None
    #: how many times a retry reset this action (a retried manual step gets a new ticket)
    generation: int = 0


@dataclass
class Escalation:
    level: int
    reason: str
    urgency: str
    by: str
    at: str


@dataclass
class RequestState:
    """A request folded from its stream."""

    request_id: str
    version: int = 0
    status: Status | None = None
    submitted: ev.RequestSubmitted | None = None
    actions: list[ActionState] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    aborted_reason: str | None = None
    failure: str | None = None
    submitted_at: str | None = None
    correlation_id: str | None = None
    #: the automated action the manual fallback stands in for, while it does
    fallback_for: str | None = None

    @property
    def exists(self) -> bool:
        return self.submitted is not None

    @property
    def item(self) -> dict[str, Any]:
        assert self.submitted is not None
        return self.submitted.item

    def action(self, name: str) -> ActionState:
        return next(a for a in self.actions if a.name == name)

    def next_action(self) -> ActionState | None:
        """The first action not yet done, if the request may still run."""
        if self.status in TERMINAL:
            return None
        if self.fallback_for is not None:
            fallback = self.action(FALLBACK)
            return None if fallback.status in ("succeeded", "skipped") else fallback
        for action in self.actions:
            if action.status in ("succeeded", "skipped") or action.name == FALLBACK:
                continue
            return action
        return None

    @property
    def all_done(self) -> bool:
        if self.fallback_for is not None:
            return self.action(FALLBACK).status == "succeeded"
        regular = [a for a in self.actions if a.name != FALLBACK]
        return bool(regular) and all(a.status in ("succeeded", "skipped") for a in regular)

    @property
    def may_fall_back(self) -> bool:
        """The item falls back to a manual ticket, and has not done so yet."""
        assert self.submitted is not None
        fallback = self.submitted.item["fulfillment"].get("fallback") or {}
        return fallback.get("strategy") == "manual" and self.fallback_for is None

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {a.name: a.outputs for a in self.actions if a.status == "succeeded"}

    @property
    def escalation_level(self) -> int:
        return self.escalations[-1].level if self.escalations else 0

    def copy(self) -> RequestState:
        """An independent copy (the pinned submission, frozen, is shared)."""
        return replace(
            self,
            actions=[replace(a, outputs=dict(a.outputs)) for a in self.actions],
            escalations=list(self.escalations),
        )

    def apply(self, envelope: EventEnvelope) -> None:
        """Fold one event of this request's stream (an event already folded is skipped)."""
        if envelope.stream_version <= self.version:
            return
        event = ev.decode(envelope)
        self.version = envelope.stream_version
        at = envelope.occurred_at.isoformat()
        self.status = next_status(self.status, envelope.event_type)  # type: ignore[assignment]
        match event:
            case ev.RequestSubmitted():
                self.submitted = event
                self.submitted_at, self.correlation_id = at, envelope.correlation_id
                self.actions = [
                    ActionState(a["name"], a["type"]) for a in event.item["fulfillment"]["actions"]
                ]
            case ev.ActionStarted():
                action = self.action(event.action)
                action.status, action.attempts, action.error = "running", event.attempt, None
            case ev.ActionAwaitingManual():
                action = self.action(event.action)
                action.status, action.key, action.url = "awaiting_manual", event.key, event.url
            case ev.ActionRetryScheduled():
                action = self.action(event.action)
                action.status, action.error = "retrying", event.error
            case ev.ActionSucceeded():
                action = self.action(event.action)
                action.status, action.outputs, action.error = "succeeded", event.outputs, None
            case ev.ActionSkipped():
                self.action(event.action).status = "skipped"
            case ev.ActionFailed():
                action = self.action(event.action)
                action.status, action.error, action.attempts = "failed", event.error, event.attempts
            case ev.RequestFailed():
                self.failure = event.error
            case ev.FallbackStarted():
                self.fallback_for = event.failed_action
                if any(a.name == FALLBACK for a in self.actions):
                    fallback = self.action(FALLBACK)
                    fallback.status, fallback.error, fallback.attempts = "pending", None, 0
                    fallback.key = fallback.url = None
                    fallback.generation += 1
                else:
                    self.actions.append(ActionState(FALLBACK, "jira"))
            case ev.RequestRetried():
                self.failure = None
                self.fallback_for = None
                for name in event.actions:
                    action = self.action(name)
                    action.status, action.error, action.attempts = "pending", None, 0
                    action.key = action.url = None
                    action.generation += 1
            case ev.RequestAborted():
                self.aborted_reason = event.reason
            case ev.RequestEscalated():
                self.escalations.append(
                    Escalation(event.level, event.reason, event.urgency, event.by, at)
                )
            case _:
                pass


def fold(request_id: str, envelopes: list[EventEnvelope]) -> RequestState:
    """A request's state from its events, in stream order."""
    state = RequestState(request_id)
    for envelope in envelopes:
        state.apply(envelope)
    return state


class CommandRejected(Exception):
    """The request's state does not allow the command; the message says why."""


def decide_retry(state: RequestState, *, by: str) -> ev.RequestRetried:
    """Only a failed request is retried, and only its failed actions run again."""
    if state.status != "failed":
        raise CommandRejected(f"only a failed request can be retried; this one is {state.status}")
    failed = [a.name for a in state.actions if a.status == "failed"]
    return ev.RequestRetried(request_id=state.request_id, by=by, actions=failed)


def decide_abort(state: RequestState, *, by: str, reason: str) -> ev.RequestAborted:
    """A request can be aborted until it completes; aborting a failed one closes it for good."""
    if state.status in ("completed", "aborted"):
        raise CommandRejected(f"the request already ended ({state.status})")
    return ev.RequestAborted(request_id=state.request_id, by=by, reason=reason)


def decide_escalate(
    state: RequestState, *, by: str, reason: str, urgency: str
) -> ev.RequestEscalated:
    """A request can be escalated, one level higher each time, until it completes or is
    aborted (a failed request is worth escalating: someone has to look at it)."""
    if state.status in ("completed", "aborted"):
        raise CommandRejected(f"the request already ended ({state.status})")
    return ev.RequestEscalated(
        request_id=state.request_id,
        by=by,
        reason=reason,
        urgency=urgency,
        level=state.escalation_level + 1,
    )
