"""The request aggregate: status transitions and what each command may do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import (
    CommandRejected,
    decide_abort,
    decide_escalate,
    decide_retry,
    fold,
    next_status,
)

ITEM = {
    "metadata": {"id": "x", "version": "1.0.0"},
    "fulfillment": {
        "actions": [{"name": "approve", "type": "jira"}, {"name": "build", "type": "terraform"}]
    },
}


def envelopes(*events: ev.Event) -> list[EventEnvelope]:
    return [
        EventEnvelope(
            event_id=uuid.uuid4(),
            event_type=e.event_type,
            schema_version=1,
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
        item_name="X",
        owner_team="team-a",
        item=ITEM,
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
    item = {
        **ITEM,
        "fulfillment": {
            **ITEM["fulfillment"],
            "fallback": {
                "strategy": "manual",
                "jira": {"project": "OPS", "issue_type": "Task", "summary": "do it by hand"},
            },
        },
    }
    first = [
        ev.RequestSubmitted(
            request_id="r1",
            item_id="x",
            item_version="1.0.0",
            item_name="X",
            owner_team="team-a",
            item=item,
            inputs={},
            resolved_inputs={},
            environment="dev",
            requester=ev.Requester(id="dana"),
        ),
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
