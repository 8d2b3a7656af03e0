"""The diff of two definitions of a catalog item, and how `devctl catalog impact` judges it
against the requests and resources that are live: which changes break them, which are news."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from conftest import REPO
from pao.contracts.openapi import REQUEST_STATUSES
from pao.devctl.impact import IN_FLIGHT, LiveUse, assess, older
from pao.devctl.requests import TERMINAL
from pao.spec.changes import diff_items

SERVED = yaml.safe_load((REPO / "catalog" / "messaging" / "sqs-queue.yaml").read_text())


def edited(version: str = "1.1.0") -> dict[str, Any]:
    item = copy.deepcopy(SERVED)
    item["metadata"]["version"] = version
    return item


def props(item: dict[str, Any]) -> dict[str, Any]:
    return item["form"]["schema"]["properties"]


def request(inputs: dict[str, Any], rid: str = "r1") -> LiveUse:
    return LiveUse("request", rid, "1.0.0", "in_progress", "dana", inputs)


def resource(inputs: dict[str, Any], rid: str = "s1") -> LiveUse:
    return LiveUse("resource", rid, "1.0.0", "active", "dana", inputs)


QUEUE = {"application": "orders", "queue": "jobs", "environment": "dev", "retention_days": 7}


def test_the_same_item_has_no_changes_and_nothing_to_report() -> None:
    diff = diff_items(SERVED, copy.deepcopy(SERVED))
    assert diff.unchanged
    assert assess(diff, [request(QUEUE)]) == []


def test_a_removed_field_that_live_inputs_hold_is_an_error_naming_them() -> None:
    target = edited()
    del props(target)["retention_days"]
    target["form"]["order"].remove("retention_days")

    diff = diff_items(SERVED, target)
    [change] = diff.fields
    assert (change.field, change.change) == ("retention_days", "removed")

    findings = assess(diff, [request(QUEUE, "r1"), resource({"application": "a"}, "s1")])
    [error] = [f for f in findings if f.level == "error"]
    assert error.rule == "field-removed"
    assert error.used_by == ("request r1",)
    # Nobody holding it: the same removal is only news.
    [quiet] = assess(diff, [resource({"application": "a"})])
    assert (quiet.level, quiet.rule) == ("info", "field-removed")


def test_a_type_change_breaks_the_live_inputs_that_hold_the_field() -> None:
    target = edited()
    props(target)["retention_days"] = {"type": "string", "default": "4"}

    diff = diff_items(SERVED, target)
    change = diff.change_of("retention_days")
    assert change is not None
    assert change.type_changed
    assert change.attributes["type"] == {"before": "integer", "after": "string"}
    assert change.attributes["default"] == {"before": 4, "after": "4"}

    findings = assess(diff, [resource(QUEUE, "s9")])
    [error] = [f for f in findings if f.level == "error"]
    assert (error.rule, error.used_by) == ("field-type-changed", ("resource s9",))
    assert "integer to string" in error.message


def test_a_field_newly_required_without_default_breaks_the_live_ones_lacking_it() -> None:
    target = edited()
    props(target)["cost_centre"] = {"type": "string"}
    target["form"]["schema"]["required"].append("cost_centre")

    diff = diff_items(SERVED, target)
    change = diff.change_of("cost_centre")
    assert change is not None
    assert change.change == "added"
    assert change.newly_required

    with_it = request({**QUEUE, "cost_centre": "cc-1"}, "r1")
    without = resource(QUEUE, "s1")
    [error] = [f for f in assess(diff, [with_it, without]) if f.level == "error"]
    assert (error.rule, error.used_by) == ("field-newly-required", ("resource s1",))


def test_a_field_made_required_with_a_default_is_not_breaking() -> None:
    target = edited()
    target["form"]["schema"]["required"].append("retention_days")

    diff = diff_items(SERVED, target)
    change = diff.change_of("retention_days")
    assert change is not None
    assert change.attributes == {"required": {"before": False, "after": True}}
    assert not change.newly_required
    [info] = assess(diff, [resource({"application": "a"})])
    assert (info.level, info.rule) == ("info", "field-changed")


def test_enum_changes_list_the_values_added_and_removed_and_who_holds_a_removed_one() -> None:
    target = edited()
    props(target)["environment"] = {
        "title": "Environment",
        "type": "string",
        "enum": ["dev", "prod", "sandbox"],
    }

    diff = diff_items(SERVED, target)
    change = diff.change_of("environment")
    assert change is not None
    assert change.attributes["enum"]["added"] == ["sandbox"]
    assert change.attributes["enum"]["removed"] == ["staging"]
    # The served field is a $ref to the common type, compared as resolved: still a string.
    assert set(change.attributes) == {"enum"}

    staging = resource({**QUEUE, "environment": "staging"}, "s2")
    findings = assess(diff, [staging])
    [changed] = findings
    assert (changed.level, changed.rule) == ("info", "field-changed")
    assert changed.used_by == ("resource s2",)
    assert "+['sandbox']" in changed.message
    assert "-['staging']" in changed.message


def test_a_ref_replaced_by_the_same_inline_schema_is_no_change() -> None:
    target = edited()
    props(target)["environment"] = {
        "title": "Environment",
        "description": "A target environment.",
        "type": "string",
        "enum": ["dev", "staging", "prod"],
    }
    assert diff_items(SERVED, target).fields == ()


def test_an_added_optional_field_is_news() -> None:
    target = edited()
    props(target)["dead_letter"] = {"type": "boolean", "default": False}

    diff = diff_items(SERVED, target)
    [finding] = assess(diff, [request(QUEUE)])
    assert (finding.level, finding.rule, finding.subject) == ("info", "field-added", "dead_letter")
    assert "optional" in finding.message
    assert "default False" in finding.message


def test_a_live_input_the_target_never_declares_is_an_error() -> None:
    """A field dropped before the served version: live things made earlier still carry it."""
    diff = diff_items(SERVED, edited())
    old = resource({**QUEUE, "kms_key": "alias/x"}, "s7")
    [error] = assess(diff, [old, request(QUEUE)])
    assert (error.level, error.rule) == ("error", "field-not-in-target")
    assert error.used_by == ("resource s7",)


def test_action_changes_name_the_type_and_each_changed_key() -> None:
    target = edited()
    actions = target["fulfillment"]["actions"]
    actions[0]["rest"]["body"]["QueueName"] = "{{ inputs.queue }}"
    actions[0]["retry"]["max_attempts"] = 6
    actions[1]["type"] = "jira"
    actions.append({"name": "announce", "type": "rest", "rest": {"method": "POST", "url": "/"}})
    target["lifecycle"]["teardown"] = []

    diff = diff_items(SERVED, target)
    changes = {(c.section, c.action): c for c in diff.actions}
    create = changes[("actions", "create_queue")]
    assert create.change == "changed"
    assert create.keys == ("rest.body.QueueName", "retry.max_attempts")
    arn = changes[("actions", "queue_arn")]
    assert (arn.type_before, arn.type_after) == ("rest", "jira")
    assert "type" in arn.keys
    assert changes[("actions", "announce")].change == "added"
    assert changes[("teardown", "delete_queue")].change == "removed"

    findings = assess(diff, [])
    assert {f.level for f in findings} == {"info"}
    assert {f.subject for f in findings} == {
        "actions.create_queue",
        "actions.queue_arn",
        "actions.announce",
        "teardown.delete_queue",
    }


def test_reordered_actions_are_a_change_of_order() -> None:
    target = edited()
    target["fulfillment"]["actions"].reverse()
    changes = diff_items(SERVED, target).actions
    assert [(c.action, c.keys) for c in changes] == [
        ("create_queue", ("order",)),
        ("queue_arn", ("order",)),
    ]


def test_a_change_without_a_higher_version_is_pointed_out() -> None:
    def rules(version: str) -> set[str]:
        target = edited(version)
        props(target)["dead_letter"] = {"type": "boolean", "default": False}
        return {f.rule for f in assess(diff_items(SERVED, target), [])}

    assert "version-not-raised" in rules("1.0.0")
    assert "version-not-raised" not in rules("1.0.1")


def test_errors_come_first() -> None:
    target = edited()
    props(target)["dead_letter"] = {"type": "boolean", "default": False}
    del props(target)["retention_days"]
    levels = [f.level for f in assess(diff_items(SERVED, target), [request(QUEUE)])]
    assert levels == ["error", "info"]


def test_versions_compare_as_semantic_versions() -> None:
    assert older("1.9.0", "1.10.0")
    assert not older("1.10.0", "1.9.0")
    assert not older("2.0.0", "2.0.0")


def test_in_flight_is_every_status_that_is_not_final() -> None:
    assert sorted(IN_FLIGHT + TERMINAL) == sorted(REQUEST_STATUSES)
