"""The request aggregate: rebuilt from its events, it decides what a command or a report may do.

This is the one place that knows how events change a request: the process manager, the command
handlers and the projector all fold through `RequestState.apply`. No I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import FALLBACK

Status = Literal["submitted", "in_progress", "awaiting_manual", "completed", "failed", "aborted"]
ActionStatus = Literal[
    "pending", "running", "awaiting_manual", "retrying", "succeeded", "skipped", "failed"
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "aborted"})
_DONE: frozenset[str] = frozenset({"succeeded", "skipped"})

#: The version of the shape `RequestState.snapshot` writes; a read model holding another
#: version refolds the request from its stream.
SNAPSHOT_VERSION = 1


def next_status(current: str | None, event_type: str) -> str | None:
    """The status a request has after an event of `event_type`: the one its contract names,
    except that an ended request stays ended and only a retry reopens a failed one."""
    cls = ev.REQUEST_EVENTS.get(event_type)
    target = cls.request_status if cls is not None else None
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
    #: how many times a retry (or a fallback) reset this action; its ticket and idempotency key
    #: belong to one generation
    generation: int = 0
    #: whether fulfilment was asked to run this generation
    dispatched: bool = False
    started_at: str | None = None
    finished_at: str | None = None

    def reset(self) -> None:
        """Back to pending, as a new generation (a retry or a repeated fallback)."""
        self.status, self.error, self.attempts = "pending", None, 0
        self.key = self.url = self.finished_at = None
        self.outputs = {}
        self.generation += 1
        self.dispatched = False


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
    #: what a person should read first about what went wrong, if anything did
    last_error: str | None = None
    submitted_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    correlation_id: str | None = None
    #: the automated action the manual fallback stands in for, while it does
    fallback_for: str | None = None

    @property
    def exists(self) -> bool:
        return self.submitted is not None

    def action(self, name: str) -> ActionState:
        return next(a for a in self.actions if a.name == name)

    def has_action(self, name: str) -> bool:
        return any(a.name == name for a in self.actions)

    def next_action(self) -> ActionState | None:
        """The first action not yet done, if the request may still run."""
        if self.status in TERMINAL:
            return None
        if self.fallback_for is not None:
            fallback = self.action(FALLBACK)
            return None if fallback.status in _DONE else fallback
        for action in self.actions:
            if action.status in _DONE or action.name == FALLBACK:
                continue
            return action
        return None

    @property
    def all_done(self) -> bool:
        if self.fallback_for is not None:
            return self.action(FALLBACK).status == "succeeded"
        regular = [a for a in self.actions if a.name != FALLBACK]
        return all(a.status in _DONE for a in regular)

    @property
    def may_fall_back(self) -> bool:
        """The item falls back to a manual ticket, and has not done so yet."""
        assert self.submitted is not None
        return self.submitted.manual_fallback and self.fallback_for is None

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
        """Fold one stored event of this request's stream (an event already folded is skipped)."""
        if envelope.stream_version <= self.version:
            return
        self.version = envelope.stream_version
        if self.submitted is None or envelope.stream_version == 1:
            self.correlation_id = envelope.correlation_id
        self._apply(ev.decode(envelope), envelope.occurred_at.isoformat())

    def _apply(self, event: ev.Event, at: str) -> None:
        before = self.status
        self.status = next_status(self.status, event.event_type)  # type: ignore[assignment]
        self.updated_at = at
        if self.status in TERMINAL and before not in TERMINAL:
            self.finished_at = at
        elif self.status not in TERMINAL:
            self.finished_at = None
        match event:
            case ev.RequestSubmitted():
                self.submitted, self.submitted_at = event, at
                self.actions = [ActionState(a.name, a.type) for a in event.actions]
            case ev.ActionDispatched():
                action = self.action(event.action)
                action.dispatched, action.generation = True, event.generation
            case ev.ActionStarted():
                action = self.action(event.action)
                action.status, action.attempts, action.error = "running", event.attempt, None
                action.started_at = action.started_at or at
                action.finished_at = None
            case ev.ActionAwaitingManual():
                action = self.action(event.action)
                action.status, action.key, action.url = "awaiting_manual", event.key, event.url
            case ev.ActionRetryScheduled():
                action = self.action(event.action)
                action.status, action.error = "retrying", event.error
            case ev.ActionSucceeded():
                action = self.action(event.action)
                action.status, action.outputs, action.error = "succeeded", event.outputs, None
                action.finished_at = at
            case ev.ActionSkipped():
                action = self.action(event.action)
                action.status, action.finished_at = "skipped", at
            case ev.ActionFailed():
                action = self.action(event.action)
                action.status, action.error, action.attempts = "failed", event.error, event.attempts
                action.finished_at = at
                self.last_error = f"{event.action}: {event.error}"
            case ev.RequestFailed():
                self.failure = event.error
                self.last_error = f"{event.action}: {event.error}"
            case ev.FallbackStarted():
                self.fallback_for = event.failed_action
                if self.has_action(FALLBACK):
                    self.action(FALLBACK).reset()
                else:
                    self.actions.append(ActionState(FALLBACK, "jira"))
            case ev.RequestRetried():
                self.failure = self.fallback_for = self.last_error = None
                for name in event.actions:
                    self.action(name).reset()
            case ev.RequestAborted():
                self.aborted_reason = event.reason
                self.last_error = f"aborted by {event.by}: {event.reason}"
            case ev.RequestEscalated():
                self.escalations.append(
                    Escalation(event.level, event.reason, event.urgency, event.by, at)
                )
            case _:
                pass

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON, for a read model to fold on from without reading the stream."""
        assert self.submitted is not None
        data = asdict(self)
        data["submitted"] = self.submitted.model_dump(mode="json")
        return {"v": SNAPSHOT_VERSION, "state": data}

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> RequestState | None:
        """The state a snapshot holds; None when it was written in another shape."""
        if snapshot.get("v") != SNAPSHOT_VERSION:
            return None
        data = dict(snapshot["state"])
        data["submitted"] = ev.RequestSubmitted.model_validate(data["submitted"])
        data["actions"] = [ActionState(**a) for a in data["actions"]]
        data["escalations"] = [Escalation(**e) for e in data["escalations"]]
        return cls(**data)


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
        status=state.status,
    )


def decide_next(state: RequestState) -> list[ev.RequestEvent]:
    """What moves the request on now: dispatch the next action, or complete; nothing while an
    action is under way or the request has ended."""
    if not state.exists or state.status in TERMINAL:
        return []
    action = state.next_action()
    if action is None:
        return (
            [ev.RequestCompleted(request_id=state.request_id, outputs=state.outputs)]
            if state.all_done
            else []
        )
    if action.status != "pending" or action.dispatched:
        return []
    return [
        ev.ActionDispatched(
            request_id=state.request_id,
            action=action.name,
            action_type=action.type,
            generation=action.generation,
        )
    ]


#: How the request records each of fulfilment's reports: the same facts, less the generation
#: (which the request already knows of the action).
_RECORDED_AS: dict[type[ev.ActionReport], type[ev.RequestEvent]] = {
    ev.ExecutionStarted: ev.ActionStarted,
    ev.ManualTicketOpened: ev.ActionAwaitingManual,
    ev.ExecutionRetryScheduled: ev.ActionRetryScheduled,
    ev.ExecutionSucceeded: ev.ActionSucceeded,
    ev.ExecutionSkipped: ev.ActionSkipped,
    ev.ExecutionFailed: ev.ActionFailed,
    ev.TicketCommented: ev.ManualTicketUpdated,
}


def _recorded(state: RequestState, report: ev.ActionReport) -> ev.RequestEvent | None:
    """The request's record of a fulfilment report, or None when the report is stale: about a
    generation that was reset, an action already finished, or a request that has ended (only a
    ticket comment is still recorded then: it is how people on the ticket heard of the end)."""
    if not state.exists or not state.has_action(report.action):
        return None
    action = state.action(report.action)
    if report.generation != action.generation:
        return None
    ended = state.status in TERMINAL or action.status in (*_DONE, "failed")
    if ended and not isinstance(report, ev.TicketCommented):
        return None
    return _RECORDED_AS[type(report)].model_validate(report.model_dump(exclude={"generation"}))


def decide_report(state: RequestState, report: ev.ActionReport) -> list[ev.RequestEvent]:
    """What a fulfilment report means for the request: its record, then what follows from it
    (the next action, completion, the manual fallback, or failure)."""
    recorded = _recorded(state, report)
    if recorded is None:
        return []
    decided: list[ev.RequestEvent] = [recorded]
    after = state.copy()
    now = datetime.now(UTC).isoformat()
    after._apply(recorded, now)
    if isinstance(recorded, ev.ActionFailed):
        if recorded.action != FALLBACK and after.may_fall_back:
            fallback = ev.FallbackStarted(
                request_id=state.request_id, failed_action=recorded.action, error=recorded.error
            )
            after._apply(fallback, now)
            decided += [fallback, *decide_next(after)]
        else:
            decided.append(
                ev.RequestFailed(
                    request_id=state.request_id, action=recorded.action, error=recorded.error
                )
            )
    elif isinstance(recorded, ev.ActionSucceeded | ev.ActionSkipped):
        decided += decide_next(after)
    return decided
