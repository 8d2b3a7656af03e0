"""How devctl draws a Terraform plan, an input change and an approval (pure text, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text

from pao.devctl.plans import (
    MASK,
    UNSET,
    approval_summary,
    counts_line,
    counts_short,
    input_changes,
    pending_plans,
    render_input_changes,
    render_plan,
)


def a_plan(**overrides: Any) -> dict[str, Any]:
    """A plan as `GET /requests/{id}/plan` returns it: one change of each kind."""
    plan = {
        "action": "provision_database",
        "plan_id": "pl-4f1c",
        "generation": 2,
        "destroy": False,
        "state": "awaiting_approval",
        "counts": {"add": 1, "change": 1, "destroy": 1, "replace": 1},
        "changes": [
            {
                "address": "aws_db_instance.main",
                "type": "aws_db_instance",
                "name": "main",
                "action": "update",
                "attributes": [
                    {"name": "instance_class", "before": "db.t3.small", "after": "db.r6g.large"},
                    {"name": "password", "before": MASK, "after": MASK},
                    {"name": "allocated_storage", "before": 20, "after": 50},
                ],
            },
            {
                "address": "aws_db_parameter_group.main",
                "type": "aws_db_parameter_group",
                "name": "main",
                "action": "replace",
                "attributes": [{"name": "family", "before": "postgres15", "after": "postgres16"}],
            },
            {
                "address": "aws_secretsmanager_secret.master",
                "type": "aws_secretsmanager_secret",
                "name": "master",
                "action": "create",
                "attributes": [
                    {"name": "name", "before": None, "after": "orders/master"},
                    {"name": "secret_string", "before": None, "after": MASK},
                ],
            },
            {
                "address": "aws_security_group_rule.legacy",
                "type": "aws_security_group_rule",
                "name": "legacy",
                "action": "delete",
                "attributes": [{"name": "cidr_blocks", "before": ["10.0.0.0/8"], "after": None}],
            },
            {
                "address": "data.aws_vpc.shared",
                "type": "aws_vpc",
                "name": "shared",
                "action": "read",
                "attributes": [],
            },
        ],
        "created_at": "2026-11-03T10:00:00Z",
    }
    return {**plan, **overrides}


def lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def style_at(text: Text, line_prefix: str) -> str:
    """The style of the span that covers the first line starting with `line_prefix`."""
    start = text.plain.index(line_prefix)
    styles = [str(s.style) for s in text.spans if s.start <= start < s.end]
    assert styles, f"no style on {line_prefix!r}"
    return styles[-1]


def test_the_header_names_action_plan_state_and_counts() -> None:
    shown = lines(render_plan(a_plan()))
    assert shown[0] == "provision_database: plan pl-4f1c, generation 2, awaiting approval"
    assert shown[1] == "  1 to add, 1 to change, 1 to replace, 1 to destroy"


@pytest.mark.parametrize(
    ("line", "colour"),
    [
        ("  ~ aws_db_instance.main", "yellow"),
        ("-/+ aws_db_parameter_group.main", "magenta"),
        ("  + aws_secretsmanager_secret.master", "green"),
        ("  - aws_security_group_rule.legacy", "red"),
        (" <= data.aws_vpc.shared", "cyan"),
    ],
)
def test_each_change_has_its_symbol_and_colour(line: str, colour: str) -> None:
    text = render_plan(a_plan())
    assert line in lines(text)
    assert style_at(text, line) == colour


def test_an_update_shows_before_and_after() -> None:
    shown = lines(render_plan(a_plan()))
    assert '      instance_class: "db.t3.small" -> "db.r6g.large"' in shown
    assert "      allocated_storage: 20 -> 50" in shown
    assert '      family: "postgres15" -> "postgres16"' in shown


def test_a_create_shows_only_the_value_after() -> None:
    shown = lines(render_plan(a_plan()))
    assert '      name: "orders/master"' in shown
    assert not any("null" in line for line in shown)


def test_a_delete_shows_only_the_value_before() -> None:
    shown = lines(render_plan(a_plan()))
    assert '      cidr_blocks: ["10.0.0.0/8"]' in shown
    legacy = shown.index("  - aws_security_group_rule.legacy")
    assert "->" not in shown[legacy + 1]


def test_masked_values_stay_masked_and_bare() -> None:
    shown = lines(render_plan(a_plan()))
    assert "      password: *** -> ***" in shown
    assert "      secret_string: ***" in shown
    assert '"***"' not in "\n".join(shown)


def test_a_plan_without_changes_says_so() -> None:
    plan = a_plan(changes=[], counts={"add": 0, "change": 0, "destroy": 0, "replace": 0})
    assert lines(render_plan(plan))[1:] == [
        "  0 to add, 0 to change, 0 to replace, 0 to destroy",
        "  no changes",
    ]


def test_a_destroy_plan_and_a_summarised_one_say_so() -> None:
    text = render_plan(a_plan(destroy=True, state="approved", truncated=12))
    assert lines(text)[0].endswith(", approved, destroys the resource")
    assert lines(text)[-1] == "  ... 12 more change(s) not shown"


def test_an_unknown_change_is_marked_not_dropped() -> None:
    plan = a_plan(changes=[{"address": "x.y", "action": "forget", "attributes": []}])
    assert "  ? x.y" in lines(render_plan(plan))


def test_counts_read_in_one_order() -> None:
    counts = {"destroy": 3, "replace": 0, "add": 2, "change": 1}
    assert counts_line(counts) == "2 to add, 1 to change, 0 to replace, 3 to destroy"
    assert counts_short(counts) == "+2 ~1 -/+0 -3"
    assert counts_short(None) == "+0 ~0 -/+0 -0"


def test_only_plans_awaiting_approval_are_pending() -> None:
    document = {
        "request_id": "r-1",
        "plans": [a_plan(plan_id="old", state="stale"), a_plan(plan_id="new")],
    }
    assert [p["plan_id"] for p in pending_plans(document)] == ["new"]
    assert pending_plans({"request_id": "r-1", "plans": []}) == []


def test_input_changes_list_changed_and_added_fields_and_keep_secrets_hidden() -> None:
    old = {"db_name": "orders", "instance_size": "small", "password": MASK, "replicas": 1}
    new = {**old, "instance_size": "large", "password": "hunter2", "backup_days": 7}
    changes = input_changes(old, new)
    assert changes == [
        ("instance_size", "small", "large"),
        ("password", MASK, MASK),
        ("backup_days", UNSET, 7),
    ]
    text = render_input_changes(changes)
    assert lines(text) == [
        '  ~ instance_size: "small" -> "large"',
        "  ~ password: *** -> ***",
        "  + backup_days: 7",
    ]
    assert "hunter2" not in text.plain
    assert style_at(text, "  + backup_days") == "green"
    assert input_changes(old, dict(old)) == []


def test_an_approval_summary_names_approvers_and_decisions() -> None:
    approval = {
        "state": "pending",
        "action": "provision_database",
        "approvers": {"users": ["ann"], "teams": ["team-dba"], "roles": []},
        "needed": "all",
        "decisions": [{"by": "ann", "decision": "approved", "comment": None, "at": "t"}],
        "requested_at": "t",
    }
    assert approval_summary(approval) == (
        "approval of provision_database pending (all of users ann; teams team-dba; approved by ann)"
    )
    assert approval_summary(None) == "no approval asked"
