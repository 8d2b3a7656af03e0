"""Fulfilment modes: what a request runs in each mode, which items may offer which modes, the
requester's choice, and an operator's switch as the catalog view folds it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from pao.catalog.view import CatalogView
from pao.contracts import events as ev
from pao.contracts.commands import SubmitRequest
from pao.contracts.envelope import EventEnvelope
from pao.contracts.errors import PaoError
from pao.request.aggregate import RequestState, decide_next, decide_report
from pao.request.handlers import _submission, mode_for
from pao.request.resource import ResourceState
from pao.spec.lifecycle import actions_for, effective_mode, modes_of
from pao.spec.validation import validate_text

AUTOMATED = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: sns-topic
  name: SNS topic
  category: messaging
  owner: team-platform
  version: 1.0.0
  description: An SNS topic, created through the SNS API.
form:
  schema:
    type: object
    required: [name]
    properties:
      name: {type: string}
    examples: [{name: orders}]
fulfillment:
  mode: automated
  modes: [automated, manual]
  fallback:
    strategy: manual
    jira:
      project: OPS
      issue_type: Task
      summary: "{{ request.kind }} topic {{ inputs.name }} by hand"
  actions:
    - name: create_topic
      type: rest
      rest:
        method: POST
        url: "https://sns.example.com/topics"
        body: {name: "{{ inputs.name }}"}
        outputs: {topic_arn: /arn}
lifecycle:
  teardown:
    - name: delete_topic
      type: rest
      rest:
        method: DELETE
        url: "https://sns.example.com/topics/{{ resource.outputs.create_topic.topic_arn }}"
"""

MANUAL_ONLY = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: vpn-access
  name: VPN access
  category: networking
  owner: team-network
  version: 1.0.0
  description: Access to the office VPN, granted by the network team.
form:
  schema:
    type: object
    properties:
      reason: {type: string}
    examples: [{reason: travel}]
fulfillment:
  mode: manual
  actions:
    - name: grant
      type: jira
      jira: {project: NET, issue_type: Task, summary: "VPN for {{ user.id }}"}
"""


def item(text: str = AUTOMATED, **fulfillment: Any) -> dict[str, Any]:
    data = yaml.safe_load(text)
    data["fulfillment"].update(fulfillment)
    for key in [k for k, v in fulfillment.items() if v is None]:
        del data["fulfillment"][key]
    return data


def problems(data: dict[str, Any]) -> set[tuple[str, str]]:
    report = validate_text(yaml.safe_dump(data, sort_keys=False), "item.yaml")
    return {(p.rule, p.pointer) for p in report.problems}


def command(mode: str | None = None) -> SubmitRequest:
    return SubmitRequest(
        item_id="sns-topic",
        inputs={"name": "orders"},
        requester=ev.Requester(id="dana", teams=["payments"]),
        mode=mode,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["create", "update", "decommission"])
def test_manual_mode_of_an_automated_item_runs_its_fallback_ticket_for_every_kind(
    kind: str,
) -> None:
    automated = item()
    [manual] = actions_for(automated, kind, "manual")
    assert manual == {
        "name": "manual",
        "type": "jira",
        "jira": automated["fulfillment"]["fallback"]["jira"],
    }
    assert [a["name"] for a in actions_for(automated, kind, "automated")] == [
        a["name"] for a in actions_for(automated, kind)
    ]


def test_the_default_mode_runs_the_items_own_actions() -> None:
    assert [a["name"] for a in actions_for(item(), "create")] == ["create_topic"]
    assert [a["name"] for a in actions_for(item(), "decommission")] == ["delete_topic"]
    # an item whose default is manual but that has automated actions runs the ticket by default
    assert [a["name"] for a in actions_for(item(mode="manual"), "create")] == ["manual"]


def test_a_manual_item_runs_its_own_tickets_in_manual_mode() -> None:
    manual = item(MANUAL_ONLY)
    assert [a["name"] for a in actions_for(manual, "create", "manual")] == ["grant"]
    assert modes_of(manual) == ["manual"]


def test_the_effective_mode_is_a_switch_the_item_still_offers() -> None:
    assert effective_mode(item(), "manual") == "manual"
    assert effective_mode(item(), None) == "automated"
    assert effective_mode(item(modes=["automated"]), "manual") == "automated"


def test_an_automated_item_with_its_fallback_ticket_may_offer_both_modes() -> None:
    assert problems(item()) == set()


def test_offering_manual_on_automated_actions_needs_the_fallback_ticket() -> None:
    without = item(fallback=None)
    assert problems(without) == {("fulfillment-mode", "/fulfillment/modes")}
    no_ticket = item(fallback={"strategy": "none"})
    assert problems(no_ticket) == {("fulfillment-mode", "/fulfillment/fallback")}
    # only automated: no fallback is needed
    assert problems(item(fallback=None, modes=["automated"])) == set()


def test_the_default_mode_must_be_one_of_the_modes() -> None:
    assert problems(item(modes=["manual"])) == {("fulfillment-mode", "/fulfillment/mode")}


def test_automated_needs_a_terraform_or_rest_action() -> None:
    manual = item(MANUAL_ONLY, modes=["manual", "automated"])
    assert problems(manual) == {("fulfillment-mode", "/fulfillment/modes")}
    assert problems(item(MANUAL_ONLY, mode="automated")) == {("fulfillment-mode", "/fulfillment")}


def test_the_names_of_paos_own_tickets_are_reserved() -> None:
    renamed = item()
    renamed["fulfillment"]["actions"][0]["name"] = "manual"
    renamed["fulfillment"]["actions"][0]["rest"]["outputs"] = {}
    renamed["lifecycle"]["teardown"][0]["name"] = "fallback"
    renamed["lifecycle"]["teardown"][0]["rest"]["url"] = "https://sns.example.com/x"
    assert problems(renamed) == {
        ("action-name", "/fulfillment/actions/0/name"),
        ("action-name", "/lifecycle/teardown/0/name"),
    }


def test_in_manual_mode_the_ticket_cannot_use_outputs_of_actions_that_do_not_run() -> None:
    uses_outputs = item()
    uses_outputs["fulfillment"]["fallback"]["jira"]["description"] = (
        "{{ outputs.create_topic.topic_arn }}"
    )
    assert problems(uses_outputs) == {
        ("template-reference", "/fulfillment/fallback/jira/description")
    }
    # as a fallback only, it runs after the actions that succeeded
    fallback_only = item(modes=["automated"])
    fallback_only["fulfillment"]["fallback"]["jira"]["description"] = (
        "{{ outputs.create_topic.topic_arn }}"
    )
    assert problems(fallback_only) == set()


def test_a_mode_the_item_does_not_offer_is_refused_naming_the_ones_it_does() -> None:
    with pytest.raises(PaoError) as refused:
        mode_for(command("manual"), item(modes=["automated"]), None)
    assert refused.value.code.code == "PAO-CAT-007"
    assert refused.value.code.http_status == 400
    assert [d.field for d in refused.value.details] == ["/mode"]
    assert "automated" in refused.value.suggestion


def test_the_requesters_choice_wins_over_the_catalogs_mode() -> None:
    assert mode_for(command(), item(), "manual") == "manual"
    assert mode_for(command("automated"), item(), "manual") == "automated"
    assert mode_for(command(), item(), None) == "automated"


def submission(mode: str, kind: str = "create", **extra: Any) -> ev.RequestSubmitted:
    return _submission(
        command(),
        item=item(),
        item_hash="sha256:x",
        default_environment="dev",
        kind=kind,
        resource_id="res-1",
        mode=mode,
        **extra,
    )


def test_a_manual_request_pins_its_mode_and_has_no_further_fallback() -> None:
    manual = submission("manual")
    assert manual.mode == "manual"
    assert [(a.name, a.type) for a in manual.actions] == [("manual", "jira")]
    assert manual.manual_fallback is False
    automated = submission("automated")
    assert [a.name for a in automated.actions] == ["create_topic"]
    assert automated.manual_fallback is True


def test_a_decommission_carries_what_the_resource_recorded() -> None:
    outputs = {"create_topic": {"topic_arn": "arn:aws:sns:eu-west-1:1:orders"}}
    event = submission("automated", kind="decommission", resource_outputs=outputs)
    assert event.resource_outputs == outputs
    assert [a.name for a in event.actions] == ["delete_topic"]
    # events written before either field existed read as the item's default and no outputs
    old = ev.RequestSubmitted.model_validate(
        event.model_dump(mode="json", exclude={"mode", "resource_outputs"})
    )
    assert (old.mode, old.resource_outputs) == (None, {})


def envelope(event: ev.Event, stream: str, version: int) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        stream_id=stream,
        stream_version=version,
        global_position=version,
        occurred_at=datetime.now(UTC),
        data=event.model_dump(mode="json"),
    )


def test_a_failed_manual_ticket_fails_the_request() -> None:
    state = RequestState("r1")
    state.apply(envelope(submission("manual").model_copy(update={"request_id": "r1"}), "r", 1))
    [dispatched] = decide_next(state)
    assert (dispatched.action, dispatched.action_type) == ("manual", "jira")
    state.apply(envelope(dispatched, "r", 2))
    failed = ev.ExecutionFailed(request_id="r1", action="manual", error="Rejected", attempts=1)
    assert [e.event_type for e in decide_report(state, failed)] == [
        "ActionFailed",
        "RequestFailed",
    ]


def test_a_resource_keeps_each_actions_latest_outputs() -> None:
    resource = ResourceState("res-1")
    created = ev.ResourceProvisioning(
        resource_id="res-1",
        request_id="r1",
        item_id="sns-topic",
        item_version="1.0.0",
        item_hash="sha256:x",
        item_name="SNS topic",
        owner_team="team-platform",
        owner="dana",
        environment="dev",
        inputs={"name": "orders"},
    )
    resource.apply(envelope(created, "resource-res-1", 1))
    for version, outputs in [(2, {"create_topic": {"topic_arn": "arn:1"}}), (3, {"manual": {}})]:
        activated = ev.ResourceActivated(
            resource_id="res-1",
            request_id=f"r{version}",
            inputs={"name": "orders"},
            outputs=outputs,
            item_version="1.0.0",
        )
        resource.apply(envelope(activated, "resource-res-1", version))
    assert resource.outputs == {"create_topic": {"topic_arn": "arn:1"}, "manual": {}}


class Catalog:
    """The catalog stream in memory, folded into a view."""

    def __init__(self) -> None:
        self.view = CatalogView()

    def append(self, event: ev.Event) -> None:
        self.view.apply(envelope(event, "catalog", self.view.stream_version + 1))

    def publish(self, data: dict[str, Any]) -> None:
        self.append(
            ev.CatalogItemUpdated(
                item_id="sns-topic",
                previous_version="1.0.0",
                version=data["metadata"]["version"],
                path="messaging/sns-topic.yaml",
                item_hash=ev.item_hash(data),
                item=data,
            )
        )

    def switch(self, mode: str, previous: str) -> None:
        self.append(
            ev.CatalogItemModeSwitched(
                item_id="sns-topic",
                mode=mode,  # type: ignore[arg-type]
                previous_mode=previous,  # type: ignore[arg-type]
                reason="SNS API outage",
                by="olga",
            )
        )

    def summary(self) -> dict[str, Any]:
        [found] = self.view.search()
        return found.model_dump()


def test_a_switch_shows_in_the_listing_and_survives_a_refresh_until_switched_back() -> None:
    catalog = Catalog()
    catalog.publish(item())
    assert catalog.summary()["mode"] == "automated"
    assert catalog.summary()["mode_switch"] is None

    catalog.switch("manual", "automated")
    summary = catalog.summary()
    assert (summary["mode"], summary["default_mode"]) == ("manual", "automated")
    assert summary["modes"] == ["automated", "manual"]
    assert summary["mode_switch"]["by"] == "olga"
    assert summary["mode_switch"]["reason"] == "SNS API outage"
    assert catalog.view.mode_of("sns-topic") == "manual"

    newer = item()
    newer["metadata"]["version"] = "1.1.0"
    catalog.publish(newer)  # a refresh with a new definition
    assert catalog.view.mode_of("sns-topic") == "manual"

    catalog.switch("automated", "manual")
    assert catalog.summary()["mode"] == "automated"
    assert catalog.summary()["mode_switch"] is None


def test_a_switch_ends_when_the_item_stops_offering_its_mode() -> None:
    catalog = Catalog()
    catalog.publish(item())
    catalog.switch("manual", "automated")
    catalog.publish(item(modes=["automated"]))
    assert catalog.view.mode_of("sns-topic") == "automated"
    assert catalog.view.mode_state("sns-topic").mode_switch is None
