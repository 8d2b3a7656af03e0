"""The `resource` template scope: an update or a decommission sees what the resource's earlier
requests recorded (`resource.outputs.<action>.<key>`), validated against the item's actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from pao.fulfillment.context import run_context
from pao.fulfillment.ledger import Fulfillment
from pao.spec.rendering import RenderError, preview_context, render_string, template_context
from pao.spec.validation import validate_text

ITEM = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: dns-zone
  name: DNS zone
  category: networking
  owner: team-network
  version: 1.0.0
  description: A private hosted zone, created through the DNS API.
form:
  schema:
    type: object
    required: [domain]
    properties:
      domain: {type: string}
    examples: [{domain: orders.internal}]
fulfillment:
  mode: automated
  actions:
    - name: create_zone
      type: rest
      rest:
        method: POST
        url: "https://dns.example.com/zones"
        body: {name: "{{ inputs.domain }}"}
        outputs: {zone_id: /id}
lifecycle:
  teardown:
    - name: delete_records
      type: rest
      rest:
        method: DELETE
        url: "https://dns.example.com/zones/{{ resource.outputs.create_zone.zone_id }}/records"
    - name: delete_zone
      type: rest
      rest:
        method: DELETE
        url: "https://dns.example.com/zones/{{ TEMPLATE }}"
"""


def item(template: str = "{{ resource.outputs.create_zone.zone_id }}") -> dict[str, Any]:
    return yaml.safe_load(ITEM.replace("{{ TEMPLATE }}", template))


def problems(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    report = validate_text(yaml.safe_dump(data, sort_keys=False), "dns-zone.yaml")
    return [(p.rule, p.pointer, p.message) for p in report.problems]


def context(**extra: Any) -> dict[str, Any]:
    return template_context(
        item(),
        {"domain": "orders.internal"},
        user={"id": "dana"},
        system={},
        environments={},
        request_id="req-2",
        correlation_id="c-2",
        created_at="2026-11-26T00:00:00Z",
        outputs={},
        kind="decommission",
        resource_id="res-1",
        **extra,
    )


def test_a_decommission_renders_what_the_create_recorded() -> None:
    scope = context(resource_outputs={"create_zone": {"zone_id": "Z0123"}})
    assert render_string("{{ resource.outputs.create_zone.zone_id }}", scope) == "Z0123"
    assert render_string("{{ resource.id }}", scope) == "res-1"


def test_an_output_the_resource_never_recorded_fails_the_render() -> None:
    with pytest.raises(RenderError, match="undefined"):
        render_string("{{ resource.outputs.create_zone.zone_id }}", context())


def test_a_preview_shows_placeholders_for_the_resources_outputs() -> None:
    preview = preview_context(item(), {"domain": "orders.internal"})
    assert render_string("{{ resource.outputs.create_zone.zone_id }}", preview) == (
        "<create_zone.zone_id>"
    )


def test_fulfilment_renders_with_the_outputs_its_request_carried() -> None:
    fulfillment = Fulfillment(
        request_id="req-2",
        item_id="dns-zone",
        item_version="1.0.0",
        item_hash="sha256:x",
        correlation_id="c-2",
        requester={"id": "dana"},
        environment="dev",
        inputs={"domain": "orders.internal"},
        submitted_at=datetime.now(UTC),
        aborted=False,
        stream_version=0,
        runs={},
        kind="decommission",
        resource_id="res-1",
        resource_outputs={"create_zone": {"zone_id": "Z0123"}},
    )
    scope = run_context(fulfillment, item(), system={}, environments={})
    assert scope["resource"] == {"id": "res-1", "outputs": {"create_zone": {"zone_id": "Z0123"}}}


def test_teardown_templates_may_use_the_resources_outputs() -> None:
    assert problems(item()) == []


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ resource.outputs.create_zon.zone_id }}",
            "resource.outputs.create_zon is not an action of the item (did you mean "
            "'create_zone'?); its actions: create_zone",
        ),
        (
            "{{ resource.outputs.create_zone.zone }}",
            "resource.outputs.create_zone.zone is not an output of create_zone (did you mean "
            "'zone_id'?); it records status_code, zone_id",
        ),
        (
            "{{ resource.output }}",
            "resource.output does not exist (did you mean 'outputs'?); resource has id, outputs",
        ),
        (
            # the teardown runs before anything of the create: its outputs are the resource's
            "{{ outputs.create_zone.zone_id }}",
            "outputs.create_zone is not an earlier action; earlier actions: delete_records "
            "(what the resource's earlier requests recorded is resource.outputs.create_zone)",
        ),
    ],
)
def test_a_reference_to_what_the_resource_did_not_record_is_a_problem(
    template: str, message: str
) -> None:
    assert problems(item(template)) == [
        ("template-reference", "/lifecycle/teardown/1/rest/url", message)
    ]
