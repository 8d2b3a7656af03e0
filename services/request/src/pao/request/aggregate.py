"""The request aggregate: rebuilt from its events, it decides what a command or a report may do.

This is the one place that knows how events change a request: the process manager, the command
handlers and the projector all fold through `RequestState.apply`. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.contracts.events import FALLBACK

Status = Literal[
    "submitted",
    "in_progress",
    "awaiting_approval",
    "awaiting_manual",
    "completed",
    "failed",
    "aborted",
]
ActionStatus = Literal[
    "pending",
    "running",
    "planned",
    "awaiting_approval",
    "awaiting_manual",
    "retrying",
    "succeeded",
    "skipped",
    "failed",
]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "aborted"})
_DONE: frozenset[str] = frozenset({"succeeded", "skipped"})

#: The version of the shape `RequestState.snapshot` writes; a read model holding another
#: version refolds the request from its stream.
SNAPSHOT_VERSION = 2


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
    #: the Terraform plan this generation works with (the latest one planned)
    plan_id: str | None = None

    def reset(self) -> None:
        """Back to pending, as a new generation (a retry or a repeated fallback)."""
        self.status, self.error, self.attempts = "pending", None, 0
        self.key = self.url = self.finished_at = self.plan_id = None
        self.outputs = {}
        self.generation += 1
        self.dispatched = False


@dataclass
class Approval:
    """An approval the request asked for: of the whole request (`action` None), of an action,
    or of one plan of a Terraform action; and the decisions on it so far."""

    action: str | None
    plan_id: str | None
    policy: dict[str, Any]
    requested_at: str
    state: Literal["pending", "approved", "rejected", "closed"] = "pending"
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def about(self, action: str | None, plan_id: str | None) -> bool:
        return self.action == action and self.plan_id == plan_id

    def complete_with(self, decision: ev.ApprovalDecided) -> bool:
        """Whether the approvals so far and `decision` together are enough."""
        approvals = [d for d in self.decisions if d["decision"] == "approved"]
        approvals.append(
            {"by": decision.by, "by_teams": decision.by_teams, "by_roles": decision.by_roles}
        )
        if self.policy.get("needed", "any") == "any":
            return True
        approvers = self.policy["approvers"]
        users = {d["by"] for d in approvals}
        teams = {t for d in approvals for t in d.get("by_teams") or ()}
        roles = {r for d in approvals for r in d.get("by_roles") or ()}
        return (
            set(approvers.get("users") or ()) <= users
            and set(approvers.get("teams") or ()) <= teams
            and set(approvers.get("roles") or ()) <= roles
        )


@dataclass
class PlanRecord:
    """A Terraform plan of one of the request's actions and where it stands."""

    action: str
    generation: int
    plan: dict[str, Any]
    created_at: str
    state: Literal[
        "planned", "awaiting_approval", "approved", "applying", "applied", "stale", "rejected"
    ] = "planned"


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
    approvals: list[Approval] = field(default_factory=list)
    plans: list[PlanRecord] = field(default_factory=list)
    #: when the request was last retried (escalations keep their own times)
    retried_at: str | None = None

    @property
    def exists(self) -> bool:
        return self.submitted is not None

    def action(self, name: str) -> ActionState:
        return next(a for a in self.actions if a.name == name)

    @property
    def kind(self) -> str:
        assert self.submitted is not None
        return self.submitted.kind

    def planned(self, name: str) -> ev.PlannedAction | None:
        """The submitted plan of an action (None for the fallback, which has no policy)."""
        assert self.submitted is not None
        return next((a for a in self.submitted.actions if a.name == name), None)

    def approval(self, action: str | None, plan_id: str | None) -> Approval | None:
        """The latest approval asked for this (action, plan), unless a retry closed it."""
        for approval in reversed(self.approvals):
            if approval.about(action, plan_id):
                return None if approval.state == "closed" else approval
        return None

    @property
    def pending_approval(self) -> Approval | None:
        return next((a for a in reversed(self.approvals) if a.state == "pending"), None)

    def plan(self, plan_id: str) -> PlanRecord | None:
        return next((p for p in reversed(self.plans) if p.plan["plan_id"] == plan_id), None)

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
            approvals=[replace(a, decisions=list(a.decisions)) for a in self.approvals],
            plans=[replace(p) for p in self.plans],
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
            case ev.ActionPlanned():
                action = self.action(event.action)
                action.status, action.plan_id = "planned", event.plan.plan_id
                if event.replaces and (stale := self.plan(event.replaces)) is not None:
                    stale.state = "stale"
                self.plans.append(
                    PlanRecord(
                        event.action, action.generation, event.plan.model_dump(mode="json"), at
                    )
                )
            case ev.ApprovalRequested():
                self.approvals.append(
                    Approval(event.action, event.plan_id, event.policy.model_dump(mode="json"), at)
                )
                if event.action is not None and self.has_action(event.action):
                    self.action(event.action).status = "awaiting_approval"
                if event.plan_id and (plan := self.plan(event.plan_id)) is not None:
                    plan.state = "awaiting_approval"
            case ev.ApprovalDecided():
                approval = self.approval(event.action, event.plan_id)
                if approval is not None:
                    approval.decisions.append(
                        {
                            "by": event.by,
                            "by_teams": list(event.by_teams),
                            "by_roles": list(event.by_roles),
                            "decision": event.decision,
                            "comment": event.comment,
                            "at": at,
                        }
                    )
                    if event.decision == "rejected":
                        approval.state = "rejected"
                        if event.plan_id and (plan := self.plan(event.plan_id)) is not None:
                            plan.state = "rejected"
                        if event.action is not None and self.has_action(event.action):
                            action = self.action(event.action)
                            action.status, action.finished_at = "failed", at
                            action.error = f"rejected by {event.by}: {event.comment or ''}"
            case ev.ApprovalGranted():
                approval = self.approval(event.action, event.plan_id)
                if approval is not None:
                    approval.state = "approved"
                if event.plan_id and (plan := self.plan(event.plan_id)) is not None:
                    plan.state = "approved"
                if event.action is not None and self.has_action(event.action):
                    action = self.action(event.action)
                    if action.status == "awaiting_approval":
                        action.status = "planned" if event.plan_id else "pending"
            case ev.ApplyDispatched():
                action = self.action(event.action)
                action.status = "running"
                if (plan := self.plan(event.plan_id)) is not None:
                    plan.state = "applying"
            case ev.ActionApplying():
                action = self.action(event.action)
                action.status, action.attempts, action.error = "running", event.attempt, None
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
                if action.plan_id and (plan := self.plan(action.plan_id)) is not None:
                    plan.state = "applied"
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
                self.retried_at = at
                self.failure = self.fallback_for = self.last_error = None
                for name in event.actions:
                    self.action(name).reset()
                for approval in self.approvals:
                    if approval.state in ("pending", "rejected"):
                        approval.state = "closed"
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
        data["approvals"] = [Approval(**a) for a in data["approvals"]]
        data["plans"] = [PlanRecord(**p) for p in data["plans"]]
        return cls(**data)


def fold(request_id: str, envelopes: list[EventEnvelope]) -> RequestState:
    """A request's state from its events, in stream order."""
    state = RequestState(request_id)
    for envelope in envelopes:
        state.apply(envelope)
    return state


class CommandRejected(Exception):
    """The request's state does not allow the command; the message says why."""


class CommandTooSoon(CommandRejected):
    """The command came sooner after the same command than its cooldown allows."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _cool_down(what: str, last: str | None, *, now: datetime | None, cooldown: float) -> None:
    """Refuse a command repeated within `cooldown` seconds of its last time (`last`)."""
    if last is None or cooldown <= 0:
        return
    assert now is not None, "a cooldown needs the time now"
    left = cooldown - (now - datetime.fromisoformat(last)).total_seconds()
    if left > 0:
        raise CommandTooSoon(
            f"this request was {what} less than {cooldown:g} s ago; "
            f"it can be {what} again in {math.ceil(left)} s",
            retry_after=left,
        )


def decide_retry(
    state: RequestState, *, by: str, now: datetime | None = None, cooldown: float = 0.0
) -> ev.RequestRetried:
    """Only a failed request is retried, and only its failed actions run again; not again
    within `cooldown` seconds of its last retry."""
    if state.status != "failed":
        raise CommandRejected(f"only a failed request can be retried; this one is {state.status}")
    _cool_down("retried", state.retried_at, now=now, cooldown=cooldown)
    failed = [a.name for a in state.actions if a.status == "failed"]
    return ev.RequestRetried(request_id=state.request_id, by=by, actions=failed)


def decide_abort(state: RequestState, *, by: str, reason: str) -> ev.RequestAborted:
    """A request can be aborted until it completes; aborting a failed one closes it for good."""
    if state.status in ("completed", "aborted"):
        raise CommandRejected(f"the request already ended ({state.status})")
    return ev.RequestAborted(request_id=state.request_id, by=by, reason=reason)


def decide_escalate(
    state: RequestState,
    *,
    by: str,
    reason: str,
    urgency: str,
    now: datetime | None = None,
    cooldown: float = 0.0,
) -> ev.RequestEscalated:
    """A request can be escalated, one level higher each time, until it completes or is
    aborted (a failed request is worth escalating: someone has to look at it); not again
    within `cooldown` seconds of its last escalation."""
    if state.status in ("completed", "aborted"):
        raise CommandRejected(f"the request already ended ({state.status})")
    last = state.escalations[-1].at if state.escalations else None
    _cool_down("escalated", last, now=now, cooldown=cooldown)
    return ev.RequestEscalated(
        request_id=state.request_id,
        by=by,
        reason=reason,
        urgency=urgency,
        level=state.escalation_level + 1,
        status=state.status,
    )


def decide_next(state: RequestState) -> list[ev.RequestEvent]:
    """What moves the request on now: ask for an approval the policy wants, dispatch the next
    action, or complete; nothing while an action or an approval is under way, or once ended."""
    if not state.exists or state.status in TERMINAL:
        return []
    assert state.submitted is not None
    if state.submitted.approval is not None:
        asked = state.approval(None, None)
        if asked is None:
            return [_ask(state, None, None, state.submitted.approval)]
        if asked.state != "approved":
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
    planned = state.planned(action.name)
    # A Terraform action's approval comes after its plan, so approvers see what it will do.
    if planned is not None and planned.approval is not None and action.type != "terraform":
        asked = state.approval(action.name, None)
        if asked is None:
            return [_ask(state, action.name, None, planned.approval)]
        if asked.state != "approved":
            return []
    return [
        ev.ActionDispatched(
            request_id=state.request_id,
            action=action.name,
            action_type=action.type,
            generation=action.generation,
        )
    ]


def _ask(
    state: RequestState, action: str | None, plan_id: str | None, policy: ev.ApprovalPolicy
) -> ev.ApprovalRequested:
    return ev.ApprovalRequested(
        request_id=state.request_id, action=action, plan_id=plan_id, policy=policy
    )


def _needs_approval(policy: ev.ApprovalPolicy, plan: ev.PlanSummary) -> bool:
    """Whether a plan needs the policy's approval: a plan that changes nothing never does."""
    if not any(plan.counts.values()):
        return False
    if not policy.changes:
        return True
    return any(change.get("action") in policy.changes for change in plan.changes)


def _after_plan(state: RequestState, planned: ev.ActionPlanned) -> list[ev.RequestEvent]:
    """A plan is ready: ask for its approval when the policy wants one, else apply it."""
    action = state.planned(planned.action)
    policy = action.approval if action is not None else None
    if policy is not None and _needs_approval(policy, planned.plan):
        return [_ask(state, planned.action, planned.plan.plan_id, policy)]
    return [
        ev.ApplyDispatched(
            request_id=state.request_id,
            action=planned.action,
            generation=state.action(planned.action).generation,
            plan_id=planned.plan.plan_id,
        )
    ]


class NotAnApprover(Exception):
    """The caller may not decide this approval; the message says why."""


@dataclass(frozen=True)
class Decider:
    """Who decides an approval: their user id, teams and roles."""

    user: str
    teams: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


def decide_approval(
    state: RequestState, decider: Decider, *, approve: bool, comment: str | None
) -> list[ev.RequestEvent]:
    """An approver's decision on what the request waits for, and what follows from it: the
    request goes on once enough approvers said yes, and fails with the reason on a no."""
    assert state.submitted is not None
    waiting = state.pending_approval
    if state.status != "awaiting_approval" or waiting is None:
        raise CommandRejected(f"the request does not wait for an approval; it is {state.status}")
    if decider.user == state.submitted.requester.id:
        raise NotAnApprover("a requester cannot approve or reject their own request")
    approvers = waiting.policy["approvers"]
    teams = sorted(set(decider.teams) & set(approvers.get("teams") or ()))
    roles = sorted(set(decider.roles) & set(approvers.get("roles") or ()))
    if decider.user not in (approvers.get("users") or ()) and not teams and not roles:
        raise NotAnApprover(f"{decider.user} is not an approver of this request")
    if any(d["by"] == decider.user for d in waiting.decisions):
        raise CommandRejected(f"{decider.user} already decided on this approval")
    decision = ev.ApprovalDecided(
        request_id=state.request_id,
        action=waiting.action,
        plan_id=waiting.plan_id,
        by=decider.user,
        by_teams=teams,
        by_roles=roles,
        decision="approved" if approve else "rejected",
        comment=comment,
    )
    if not approve:
        what = waiting.action or "approval"
        reason = f"rejected by {decider.user}" + (f": {comment}" if comment else "")
        return [
            decision,
            ev.RequestFailed(request_id=state.request_id, action=what, error=reason),
        ]
    if not waiting.complete_with(decision):
        return [decision]
    granted = ev.ApprovalGranted(
        request_id=state.request_id, action=waiting.action, plan_id=waiting.plan_id
    )
    after = state.copy()
    now = datetime.now(UTC).isoformat()
    after._apply(decision, now)
    after._apply(granted, now)
    if waiting.plan_id is not None and waiting.action is not None:
        follow: list[ev.RequestEvent] = [
            ev.ApplyDispatched(
                request_id=state.request_id,
                action=waiting.action,
                generation=after.action(waiting.action).generation,
                plan_id=waiting.plan_id,
            )
        ]
    else:
        follow = decide_next(after)
    return [decision, granted, *follow]


#: How the request records each of fulfilment's reports: the same facts, less the generation
#: (which the request already knows of the action).
_RECORDED_AS: dict[type[ev.ActionReport], type[ev.RequestEvent]] = {
    ev.ExecutionStarted: ev.ActionStarted,
    ev.ExecutionPlanned: ev.ActionPlanned,
    ev.ExecutionApplying: ev.ActionApplying,
    ev.ExecutionLogged: ev.ActionLogged,
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
    if _overtaken(action, report):
        return None
    return _RECORDED_AS[type(report)].model_validate(report.model_dump(exclude={"generation"}))


def _overtaken(action: ActionState, report: ev.ActionReport) -> bool:
    """A report about an attempt the request has already seen more of: it arrived late (a
    republished topic can deliver a run's reports out of order), and recording it would undo
    what came after it (a start after its ticket opened would leave the request in progress)."""
    if isinstance(report, ev.ExecutionStarted):
        # A ticket, a plan or an approval means the attempt has started (its start may not have
        # been recorded yet, if it is the one arriving late).
        started = max(action.attempts, 1 if action.status != "pending" else 0)
        return action.status != "retrying" and report.attempt <= started
    if isinstance(report, ev.ExecutionRetryScheduled):
        return report.attempt < action.attempts
    return False


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
    elif isinstance(recorded, ev.ActionPlanned):
        decided += _after_plan(after, recorded)
    return decided
