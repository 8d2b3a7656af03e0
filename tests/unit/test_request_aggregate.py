"""The request aggregate: status transitions and what each command may do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import (
    CommandRejected,
    CommandTooSoon,
    RequestState,
    decide_abort,
    decide_escalate,
    decide_next,
    decide_report,
    decide_retry,
    fold,
    next_status,
)

ACTIONS = [
    ev.PlannedAction(name="approve", type="jira"),
    ev.PlannedAction(name="build", type="terraform"),
]


def envelopes(*events: ev.Event) -> list[EventEnvelope]:
    return [
        EventEnvelope(
            event_id=uuid.uuid4(),
            event_type=e.event_type,
            schema_version=e.schema_version,
            stream_id="request-r1",
            stream_version=n,
            global_position=n,
            occurred_at=datetime.now(UTC),
            data=e.model_dump(mode="json"),
        )
        for n, e in enumerate(events, start=1)
    ]


def submitted(**extra: Any) -> ev.RequestSubmitted:
    return ev.RequestSubmitted(
        request_id="r1",
        item_id="x",
        item_version="1.0.0",
        item_hash="sha256:x",
        item_name="X",
        owner_team="team-a",
        actions=ACTIONS,
        inputs={},
        resolved_inputs={},
        environment="dev",
        requester=ev.Requester(id="dana"),
        **extra,
    )


def test_the_lifecycle_of_a_request() -> None:
    state = fold(
        "r1",
        envelopes(
            submitted(),
            ev.ActionStarted(
                request_id="r1", action="approve", action_type="jira", attempt=1, spec={}
            ),
        ),
    )
    assert state.status == "in_progress"
    state = fold(
        "r1",
        envelopes(
            submitted(),
            ev.ActionStarted(
                request_id="r1", action="approve", action_type="jira", attempt=1, spec={}
            ),
            ev.ActionAwaitingManual(
                request_id="r1", action="approve", system="jira", key="P-1", url="u"
            ),
            ev.ActionSucceeded(request_id="r1", action="approve", outputs={"key": "P-1"}),
        ),
    )
    assert state.status == "in_progress"
    assert state.next_action().name == "build"
    assert state.outputs == {"approve": {"key": "P-1"}}


def test_an_ended_request_stays_ended_but_a_retry_reopens_a_failed_one() -> None:
    assert next_status("completed", "ActionStarted") == "completed"
    assert next_status("aborted", "RequestRetried") == "aborted"
    assert next_status("failed", "RequestRetried") == "in_progress"


def test_retry_reruns_only_failed_actions_and_opens_a_new_generation() -> None:
    state = fold(
        "r1",
        envelopes(
            submitted(),
            ev.ActionSucceeded(request_id="r1", action="approve", outputs={}),
            ev.ActionFailed(request_id="r1", action="build", error="boom", attempts=3),
            ev.RequestFailed(request_id="r1", action="build", error="boom"),
        ),
    )
    retried = decide_retry(state, by="dana")
    assert retried.actions == ["build"]
    after = fold(
        "r1",
        envelopes(
            submitted(),
            ev.ActionSucceeded(request_id="r1", action="approve", outputs={}),
            ev.ActionFailed(request_id="r1", action="build", error="boom", attempts=3),
            ev.RequestFailed(request_id="r1", action="build", error="boom"),
            retried,
        ),
    )
    assert after.action("build").generation == 1
    assert after.action("approve").status == "succeeded"


def test_commands_check_the_state() -> None:
    state = fold("r1", envelopes(submitted()))
    with pytest.raises(CommandRejected):
        decide_retry(state, by="dana")
    assert decide_escalate(state, by="dana", reason="slow", urgency="high").level == 1
    aborted = fold("r1", envelopes(submitted(), decide_abort(state, by="dana", reason="no")))
    with pytest.raises(CommandRejected):
        decide_abort(aborted, by="dana", reason="again")
    with pytest.raises(CommandRejected):
        decide_escalate(aborted, by="dana", reason="late", urgency="high")


def test_a_failed_automated_action_falls_back_to_a_manual_ticket() -> None:
    first = [
        submitted(manual_fallback=True),
        ev.ActionSucceeded(request_id="r1", action="approve", outputs={}),
        ev.ActionFailed(request_id="r1", action="build", error="apply failed", attempts=3),
    ]
    state = fold("r1", envelopes(*first))
    assert state.may_fall_back
    started = ev.FallbackStarted(request_id="r1", failed_action="build", error="apply failed")
    falling = fold("r1", envelopes(*first, started))
    assert falling.status == "in_progress"
    assert falling.next_action().name == "fallback"
    assert not falling.may_fall_back
    done = fold(
        "r1",
        envelopes(
            *first,
            started,
            ev.ActionSucceeded(request_id="r1", action="fallback", outputs={"key": "OPS-1"}),
        ),
    )
    assert done.all_done
    assert done.next_action() is None


def state_of(*events: ev.Event) -> RequestState:
    return fold("r1", envelopes(*events))


def test_a_submitted_request_dispatches_its_first_action_once() -> None:
    state = state_of(submitted())
    [dispatched] = decide_next(state)
    assert isinstance(dispatched, ev.ActionDispatched)
    assert (dispatched.action, dispatched.action_type, dispatched.generation) == (
        "approve",
        "jira",
        0,
    )
    assert state.status == "submitted"
    assert decide_next(state_of(submitted(), dispatched)) == []  # a redelivery dispatches nothing


def test_reports_are_recorded_and_a_success_dispatches_the_next_action() -> None:
    dispatched = ev.ActionDispatched(request_id="r1", action="approve", action_type="jira")
    started = ev.ExecutionStarted(
        request_id="r1", action="approve", action_type="jira", attempt=1, spec={"summary": "s"}
    )
    [recorded] = decide_report(state_of(submitted(), dispatched), started)
    assert isinstance(recorded, ev.ActionStarted)
    assert (recorded.attempt, recorded.spec) == (1, {"summary": "s"})
    opened = ev.ManualTicketOpened(
        request_id="r1", action="approve", system="jira", key="P-1", url="u"
    )
    [waiting] = decide_report(state_of(submitted(), dispatched, recorded), opened)
    assert isinstance(waiting, ev.ActionAwaitingManual)
    state = state_of(submitted(), dispatched, recorded, waiting)
    assert state.status == "awaiting_manual"
    done = ev.ExecutionSucceeded(request_id="r1", action="approve", outputs={"key": "P-1"})
    succeeded, following = decide_report(state, done)
    assert isinstance(succeeded, ev.ActionSucceeded)
    assert isinstance(following, ev.ActionDispatched)
    assert following.action == "build"


def test_the_last_success_completes_the_request_with_every_output() -> None:
    state = state_of(
        submitted(),
        ev.ActionSucceeded(request_id="r1", action="approve", outputs={"key": "P-1"}),
        ev.ActionDispatched(request_id="r1", action="build", action_type="terraform"),
    )
    report = ev.ExecutionSucceeded(request_id="r1", action="build", outputs={"arn": "a"})
    succeeded, completed = decide_report(state, report)
    assert isinstance(completed, ev.RequestCompleted)
    assert completed.outputs == {"approve": {"key": "P-1"}, "build": {"arn": "a"}}
    assert (
        state_of(
            submitted(),
            ev.ActionSucceeded(request_id="r1", action="approve", outputs={"key": "P-1"}),
            succeeded,
            completed,
        ).status
        == "completed"
    )


def test_a_failure_fails_the_request_or_falls_back_and_dispatches_the_fallback() -> None:
    failure = ev.ExecutionFailed(request_id="r1", action="approve", error="no", attempts=1)
    failed, request_failed = decide_report(state_of(submitted()), failure)
    assert isinstance(failed, ev.ActionFailed)
    assert isinstance(request_failed, ev.RequestFailed)
    assert request_failed.error == "no"
    _, fallback, dispatched = decide_report(state_of(submitted(manual_fallback=True)), failure)
    assert isinstance(fallback, ev.FallbackStarted)
    assert fallback.failed_action == "approve"
    assert isinstance(dispatched, ev.ActionDispatched)
    assert (dispatched.action, dispatched.action_type) == ("fallback", "jira")


def test_stale_reports_change_nothing() -> None:
    failed = state_of(
        submitted(),
        ev.ActionFailed(request_id="r1", action="approve", error="boom", attempts=3),
        ev.RequestFailed(request_id="r1", action="approve", error="boom"),
    )
    retried = state_of(
        submitted(),
        ev.ActionFailed(request_id="r1", action="approve", error="boom", attempts=3),
        ev.RequestFailed(request_id="r1", action="approve", error="boom"),
        decide_retry(failed, by="dana"),
    )
    late = ev.ExecutionSucceeded(request_id="r1", action="approve", generation=0, outputs={})
    assert decide_report(retried, late) == []  # a report about the run before the retry
    aborted = state_of(submitted(), ev.RequestAborted(request_id="r1", by="dana", reason="no"))
    assert decide_report(aborted, late) == []
    comment = ev.TicketCommented(request_id="r1", action="approve", key="P-1", comment="bye")
    [written] = decide_report(aborted, comment)  # people on the ticket heard of the abort
    assert isinstance(written, ev.ManualTicketUpdated)
    assert decide_report(state_of(submitted()), late.model_copy(update={"action": "nope"})) == []


def test_a_state_survives_its_snapshot() -> None:
    state = state_of(
        submitted(),
        ev.ActionStarted(request_id="r1", action="approve", action_type="jira", attempt=1, spec={}),
        ev.RequestEscalated(
            request_id="r1", by="dana", reason="soon", urgency="high", level=1, status="x"
        ),
    )
    assert RequestState.from_snapshot(state.snapshot()) == state
    assert RequestState.from_snapshot({"v": 0, "state": {}}) is None


def timed(*events: tuple[ev.Event, datetime]) -> list[EventEnvelope]:
    """Envelopes of events that happened at the given times."""
    return [
        EventEnvelope(
            event_id=uuid.uuid4(),
            event_type=e.event_type,
            schema_version=e.schema_version,
            stream_id="request-r1",
            stream_version=n,
            global_position=n,
            occurred_at=when,
            data=e.model_dump(mode="json"),
        )
        for n, (e, when) in enumerate(events, start=1)
    ]


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_request_is_not_retried_again_within_the_cooldown() -> None:
    failure = (
        ev.ActionFailed(request_id="r1", action="build", error="boom", attempts=3),
        ev.RequestFailed(request_id="r1", action="build", error="boom"),
    )
    state = fold(
        "r1",
        timed(
            (submitted(), T0),
            *[(e, T0) for e in failure],
            (ev.RequestRetried(request_id="r1", by="dana", actions=["build"]), T0),
            *[(e, T0 + timedelta(seconds=5)) for e in failure],
        ),
    )

    with pytest.raises(CommandTooSoon) as caught:
        decide_retry(state, by="dana", now=T0 + timedelta(seconds=10), cooldown=30)
    assert caught.value.retry_after == pytest.approx(20)
    assert "retried again in 20 s" in str(caught.value)
    again = decide_retry(state, by="dana", now=T0 + timedelta(seconds=30), cooldown=30)
    assert again.actions == ["build"]


def test_a_request_is_not_escalated_again_within_the_cooldown() -> None:
    first = ev.RequestEscalated(
        request_id="r1", by="dana", reason="slow", urgency="high", level=1, status="in_progress"
    )
    state = fold("r1", timed((submitted(), T0), (first, T0)))

    with pytest.raises(CommandTooSoon) as caught:
        decide_escalate(
            state,
            by="dana",
            reason="slower",
            urgency="critical",
            now=T0 + timedelta(seconds=299.5),
            cooldown=300,
        )
    assert caught.value.retry_after == pytest.approx(0.5)
    assert "escalated again in 1 s" in str(caught.value)
    later = decide_escalate(
        state,
        by="dana",
        reason="slower",
        urgency="critical",
        now=T0 + timedelta(seconds=300),
        cooldown=300,
    )
    assert later.level == 2
    # The first escalation has no cooldown to wait.
    fresh = fold("r1", timed((submitted(), T0)))
    assert decide_escalate(fresh, by="dana", reason="x", urgency="high", now=T0, cooldown=300)
