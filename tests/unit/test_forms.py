"""Form descriptions and input validation: conditional fields, visibility, required-ness."""

from __future__ import annotations

import yaml

from conftest import REPO
from pao.spec.forms import describe_form, input_problems

ITEMS = {p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "catalog").glob("*/*.yaml")}


def fields(item_id: str, inputs: dict) -> dict:
    item = ITEMS[item_id]
    described = describe_form(item["form"]["schema"], inputs, order=item["form"].get("order"))
    return {f.name: f for f in described.fields}


def test_fields_follow_the_declared_order() -> None:
    item = ITEMS["postgresql-rds"]
    described = describe_form(item["form"]["schema"], {}, order=item["form"]["order"])
    assert [f.name for f in described.fields] == item["form"]["order"]


def test_a_branch_only_field_appears_when_its_condition_holds() -> None:
    assert fields("eks-application", {})["hostname"].visible is False
    shown = fields("eks-application", {"ingress_enabled": True})["hostname"]
    assert shown.visible is True
    assert shown.required is True
    assert shown.conditional is True


def test_an_active_branch_tightens_constraints_and_requirements() -> None:
    prod = fields("postgresql-rds", {"environment": "prod"})
    assert prod["multi_az"].required is True
    assert prod["multi_az"].constraints["const"] is True
    assert prod["backup_retention_days"].constraints["minimum"] == 14
    dev = fields("postgresql-rds", {"environment": "dev"})
    assert dev["multi_az"].required is False
    assert "const" not in dev["multi_az"].constraints


def test_common_type_references_are_resolved_for_display() -> None:
    environment = fields("postgresql-rds", {})["environment"]
    assert environment.enum == ["dev", "staging", "prod"]
    assert environment.type == "string"


def test_input_problems_point_at_each_field() -> None:
    form = ITEMS["parameterstore-standard"]["form"]["schema"]
    problems = input_problems(
        form,
        {
            "application": "X",
            "environment": "qa",
            "parameter_name": "p",
            "parameter_type": "SecureString",
            "value": "v",
            "colour": "red",
        },
    )
    pointers = sorted(p.pointer for p in problems)
    assert pointers == [
        "/inputs/application",
        "/inputs/colour",
        "/inputs/environment",
        "/inputs/kms_key_alias",
        "/inputs/value",
    ]


def test_every_example_is_complete() -> None:
    for item in ITEMS.values():
        if item.get("kind") != "CatalogItem":
            continue
        form = item["form"]["schema"]
        for example in form["examples"]:
            assert describe_form(form, example).complete


BACKTRACKING = {
    "type": "object",
    "properties": {"name": {"type": "string", "pattern": "^(a|aa)+$"}},
    "patternProperties": {"^(b|bb)+$": {}},
    "additionalProperties": False,
}


def test_a_pattern_that_backtracks_without_end_is_a_problem_not_a_hang() -> None:
    import time

    started = time.monotonic()
    by_value = input_problems(BACKTRACKING, {"name": "a" * 40 + "b"})
    by_key = input_problems(BACKTRACKING, {"b" * 40 + "c": 1})
    nested = input_problems(
        {"type": "object", "properties": {"n": {"type": "string", "pattern": "^(a+)+$"}}},
        {"n": "a" * 28 + "b"},
    )
    assert time.monotonic() - started < 2
    assert [(p.rule, p.pointer) for p in by_value] == [("pattern-timeout", "/inputs/name")]
    assert "^(a|aa)+$" in by_value[0].message
    assert [(p.rule, p.pointer) for p in by_key] == [("pattern-timeout", f"/inputs/{'b' * 40}c")]
    assert [p.message for p in nested] == [f"'{'a' * 28}b' does not match '^(a+)+$'"]


def test_a_form_may_not_combine_unevaluated_and_pattern_properties() -> None:
    form = {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    assert [p.rule for p in input_problems(form, {"y": 1})] == ["pattern-timeout"]


def test_many_slow_values_share_one_time_budget() -> None:
    import time

    form = {"type": "array", "items": {"type": "string", "pattern": "^(a|aa)+$"}}
    started = time.monotonic()
    problems = input_problems(form, ["a" * 40 + "b"] * 60)
    assert time.monotonic() - started < 1.5
    assert len(problems) == 60
    assert {p.rule for p in problems} == {"pattern-timeout"}
    last = next(p for p in problems if p.pointer == "/inputs/59")
    assert "took longer than 500 ms in all" in last.message
