"""Approvals and Terraform plans in the request aggregate, and the resource aggregate."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from pao.contracts import events as ev
from pao.contracts.envelope import EventEnvelope
from pao.request.aggregate import (
    CommandRejected,
    Decider,
    NotAnApprover,
    RequestState,
    decide_approval,
    decide_next,
    decide_report,
    decide_retry,
)
from pao.request.resource import ChangeRefused, ResourceState, decide_change, outcome, started_by
from pao.spec.lifecycle import actions_for
from pao.spec.rendering import preview_context, render_value

DATA_TEAM = ev.ApprovalPolicy(approvers=ev.Approvers(teams=["team-data"]))


def submitted(
    *,
    approval: ev.ApprovalPolicy | None = None,
    action_approval: ev.ApprovalPolicy | None = None,
    kind: str = "create",
) -> ev.RequestSubmitted:
    return ev.RequestSubmitted(
        request_id="r1",
        item_id="postgresql-standard",
        item_version="2.0.0",
        item_hash="sha256:x",
        item_name="PostgreSQL",
        owner_team="team-data",
        actions=[ev.PlannedAction(name="database", type="terraform", approval=action_approval)],
        inputs={"db_name": "orders"},
        resolved_inputs={"db_name": "orders", "environment": "prod"},
        environment="prod",
        requester=ev.Requester(id="dana"),
        kind=kind,
        resource_id="res-1",
        approval=approval,
    )


class Stream:
    """A request's stream in memory: append what the aggregate decides, fold it back."""

    def __init__(self, first: ev.RequestSubmitted) -> None:
        self.state = RequestState("r1")
        self.append(first)

    def append(self, *events: ev.Event) -> RequestState:
        for event in events:
            self.state.apply(
                EventEnvelope(
                    event_id=uuid.uuid4(),
                    event_type=event.event_type,
                    schema_version=event.schema_version,
                    stream_id="request-r1",
                    stream_version=self.state.version + 1,
                    global_position=self.state.version + 1,
                    occurred_at=datetime.now(UTC),
                    data=event.model_dump(mode="json"),
                )
            )
        return self.state

    def report(self, report: ev.ActionReport) -> list[ev.RequestEvent]:
        decided = decide_report(self.state, report)
        self.append(*decided)
        return decided


def plan(plan_id: str, *actions: str) -> ev.PlanSummary:
    changes = [{"address": f"terraform_data.{a}", "action": a} for a in actions]
    counts = {"add": actions.count("create"), "change": actions.count("update")}
    counts |= {"replace": actions.count("replace"), "destroy": actions.count("delete")}
    return ev.PlanSummary(plan_id=plan_id, counts=counts, changes=changes)


def planned(plan_id: str, *actions: str, replaces: str | None = None) -> ev.ExecutionPlanned:
    return ev.ExecutionPlanned(
        request_id="r1", action="database", plan=plan(plan_id, *actions), replaces=replaces
    )


def types(events: list[ev.Event]) -> list[str]:
    return [e.event_type for e in events]


def test_a_plan_without_a_policy_is_applied_as_planned() -> None:
    stream = Stream(submitted())
    stream.append(*decide_next(stream.state))
    decided = stream.report(planned("p1", "create"))
    assert types(decided) == ["ActionPlanned", "ApplyDispatched"]
    assert decided[1].plan_id == "p1"


def test_a_plan_waits_for_its_approvers_and_only_they_decide() -> None:
    stream = Stream(submitted(action_approval=DATA_TEAM))
    stream.append(*decide_next(stream.state))
    decided = stream.report(planned("p1", "create", "create"))
    assert types(decided) == ["ActionPlanned", "ApprovalRequested"]
    assert stream.state.status == "awaiting_approval"
    assert stream.state.plan("p1").state == "awaiting_approval"
    with pytest.raises(NotAnApprover, match="own request"):
        decide_approval(stream.state, Decider("dana", ("team-data",)), approve=True, comment=None)
    with pytest.raises(NotAnApprover, match="not an approver"):
        decide_approval(stream.state, Decider("eve", ("team-web",)), approve=True, comment=None)
    decided = decide_approval(
        stream.state, Decider("omar", ("team-data",)), approve=True, comment="looks right"
    )
    assert types(decided) == ["ApprovalDecided", "ApprovalGranted", "ApplyDispatched"]
    assert decided[-1].plan_id == "p1"
    stream.append(*decided)
    assert stream.state.status == "in_progress"
    assert stream.state.approvals[-1].decisions[0]["comment"] == "looks right"


def test_a_rejection_fails_the_request_with_the_reason_and_a_retry_plans_again() -> None:
    stream = Stream(submitted(action_approval=DATA_TEAM))
    stream.append(*decide_next(stream.state))
    stream.report(planned("p1", "create"))
    stream.append(
        *decide_approval(
            stream.state, Decider("omar", ("team-data",)), approve=False, comment="too big"
        )
    )
    assert stream.state.status == "failed"
    assert stream.state.failure == "rejected by omar: too big"
    assert stream.state.plan("p1").state == "rejected"
    stream.append(decide_retry(stream.state, by="dana"))
    dispatched = decide_next(stream.state)
    assert types(dispatched) == ["ActionDispatched"]
    assert dispatched[0].generation == 1


def test_a_stale_plan_planned_again_is_approved_again() -> None:
    stream = Stream(submitted(action_approval=DATA_TEAM))
    stream.append(*decide_next(stream.state))
    stream.report(planned("p1", "create"))
    stream.append(
        *decide_approval(stream.state, Decider("omar", ("team-data",)), approve=True, comment=None)
    )
    decided = stream.report(planned("p2", "create", replaces="p1"))
    assert types(decided) == ["ActionPlanned", "ApprovalRequested"]
    assert decided[1].plan_id == "p2"
    assert stream.state.plan("p1").state == "stale"
    # The decision on p1 does not count for p2: the approver sees the new plan and decides.
    again = decide_approval(
        stream.state, Decider("omar", ("team-data",)), approve=True, comment=None
    )
    assert types(again) == ["ApprovalDecided", "ApprovalGranted", "ApplyDispatched"]
    assert again[-1].plan_id == "p2"
    stream.append(*again)
    with pytest.raises(CommandRejected):
        decide_approval(stream.state, Decider("omar", ("team-data",)), approve=True, comment=None)


def test_an_approval_only_on_replacements_lets_other_plans_through() -> None:
    only_replace = ev.ApprovalPolicy(
        approvers=ev.Approvers(teams=["team-data"]), changes=["replace"]
    )
    stream = Stream(submitted(action_approval=only_replace))
    stream.append(*decide_next(stream.state))
    assert types(stream.report(planned("p1", "update"))) == ["ActionPlanned", "ApplyDispatched"]


def test_a_plan_that_changes_nothing_needs_no_approval() -> None:
    stream = Stream(submitted(action_approval=DATA_TEAM))
    stream.append(*decide_next(stream.state))
    assert types(stream.report(planned("p1"))) == ["ActionPlanned", "ApplyDispatched"]


def test_a_whole_request_approval_comes_before_the_first_action_and_all_means_all() -> None:
    both = ev.ApprovalPolicy(
        approvers=ev.Approvers(users=["sam"], teams=["team-security"]), needed="all"
    )
    stream = Stream(submitted(approval=both))
    decided = decide_next(stream.state)
    assert types(decided) == ["ApprovalRequested"]
    stream.append(*decided)
    first = decide_approval(stream.state, Decider("sam"), approve=True, comment=None)
    assert types(first) == ["ApprovalDecided"]
    stream.append(*first)
    assert stream.state.status == "awaiting_approval"
    second = decide_approval(
        stream.state, Decider("kim", ("team-security",)), approve=True, comment=None
    )
    assert types(second) == ["ApprovalDecided", "ApprovalGranted", "ActionDispatched"]


def resource(state: str) -> ResourceState:
    return ResourceState("res-1", version=2, state=state, owner="dana", last_request_id="r0")


def test_a_resource_changes_only_from_a_state_that_allows_it() -> None:
    for state in ("provisioning", "updating", "decommissioning", "decommissioned"):
        with pytest.raises(ChangeRefused):
            decide_change(
                resource(state),
                kind="update",
                request_id="r1",
                by="dana",
                inputs={},
                item_version="2.0.0",
                item_hash="h",
            )
    moved = decide_change(
        resource("active"),
        kind="decommission",
        request_id="r1",
        by="dana",
        inputs={},
        item_version="2.0.0",
        item_hash="h",
        reason="not needed",
    )
    assert isinstance(moved, ev.ResourceDecommissioning)


def test_the_end_of_a_request_moves_its_resource_on() -> None:
    create = submitted()
    state = ResourceState("res-1")
    state.apply(_resource_envelope(started_by(create), 1))
    assert state.state == "provisioning"
    done = outcome(state, create, ev.RequestCompleted(request_id="r1", outputs={"db": {"x": 1}}))
    assert types(done) == ["ResourceActivated"]
    failed = outcome(state, create, ev.RequestFailed(request_id="r1", action="db", error="boom"))
    assert types(failed) == ["ResourceFailed"]
    # a request that is not the resource's current one changes nothing
    other = submitted().model_copy(update={"request_id": "r9"})
    assert outcome(state, other, ev.RequestCompleted(request_id="r9", outputs={})) == []
    decommission = submitted(kind="decommission")
    state.apply(
        _resource_envelope(
            ev.ResourceDecommissioning(resource_id="res-1", request_id="r1", by="d", reason="r"), 2
        )
    )
    gone = outcome(state, decommission, ev.RequestCompleted(request_id="r1", outputs={}))
    assert types(gone) == ["ResourceDecommissioned"]


def _resource_envelope(event: ev.Event, version: int) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        stream_id="resource-res-1",
        stream_version=version,
        global_position=version,
        occurred_at=datetime.now(UTC),
        data=event.model_dump(mode="json"),
    )


@pytest.mark.parametrize("kind", ["create", "update", "decommission"])
def test_every_catalog_item_renders_what_each_kind_of_request_runs(kind: str) -> None:
    catalog = Path(__file__).resolve().parents[2] / "catalog"
    for path in sorted(catalog.glob("*/*.yaml")):
        item = yaml.safe_load(path.read_text())
        if item.get("kind") != "CatalogItem" or path.parent.name in ("templates", "tests"):
            continue
        example = item["form"]["schema"]["examples"][0]
        context = preview_context(item, example)
        actions = actions_for(item, kind)
        assert actions, path
        rendered = [
            render_value(a[a["type"]], context, f"/{a['name']}")
            for a in actions
            if render_value(a.get("when", True), context, f"/{a['name']}/when")
        ]  # raises RenderError naming the template that does not render
        if kind == "decommission" and all(a["type"] == "jira" for a in actions):
            assert rendered[0]["summary"].startswith("Decommission"), path


def test_a_start_delivered_after_its_ticket_opened_changes_nothing() -> None:
    """A republished topic can hand the request its run's reports out of order."""
    manual = submitted().model_copy(
        update={"actions": [ev.PlannedAction(name="ticket", type="jira")]}
    )
    stream = Stream(manual)
    stream.append(*decide_next(stream.state))
    opened = ev.ManualTicketOpened(
        request_id="r1", action="ticket", system="jira", key="DBA-1", url="u"
    )
    assert types(stream.report(opened)) == ["ActionAwaitingManual"]
    late = ev.ExecutionStarted(
        request_id="r1", action="ticket", action_type="jira", attempt=1, spec={}
    )
    assert stream.report(late) == []
    assert stream.state.status == "awaiting_manual"
    # ... while a start of a new attempt, after a retry was scheduled, is recorded
    retry = ev.ExecutionRetryScheduled(
        request_id="r1", action="ticket", attempt=1, error="x", next_attempt_at="t"
    )
    stream.report(retry)
    again = ev.ExecutionStarted(
        request_id="r1", action="ticket", action_type="jira", attempt=2, spec={}
    )
    assert types(stream.report(again)) == ["ActionStarted"]
    assert stream.report(retry) == []  # the first attempt's retry, delivered again late
