"""What a requester types reaches a JIRA ticket as text: never as links, macros or tables."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from pao.spec.rendering import preview_context, render_actions, render_spec, render_string

HOSTILE = "[click here|http://evil.example/login] {html}<script>x()</script>{html}\n|| a || b ||"
ITEM = yaml.safe_load((REPO / "catalog/databases/postgresql-rds.yaml").read_text())
INPUTS = {
    "db_name": "orders_eu",
    "environment": "prod",
    "instance_size": "small",
    "owner_email": HOSTILE,
}


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("[click|http://evil]", r"\[click\|http://evil\]"),
        ("{html}<b>x</b>{html}", r"\{html\}<b>x</b>\{html\}"),
        ("|| h1 || h2 ||", r"\|\| h1 \|\| h2 \|\|"),
        ("!http://evil/pixel.png!", r"\!http://evil/pixel.png\!"),
        ("*bold* +ins+ ^sup^ ~sub~ ??cite??", r"\*bold\* \+ins\+ \^sup\^ \~sub\~ \?\?cite\?\?"),
        ("-struck- _em_", r"\-struck\- \_em\_"),
        ("# one\n- two\n----", "\\# one\n\\- two\n\\-\\-\\-\\-"),
        ("line\\\\break", "line&#92;&#92;break"),
        ("orders-api snake_case 2026-01-01", "orders-api snake_case 2026-01-01"),
    ],
)
def test_the_jira_filter_escapes_wiki_markup(typed: str, shown: str) -> None:
    assert render_string("{{ value | jira }}", {"value": typed}) == shown


def test_hostile_inputs_are_shown_as_typed_in_a_jira_ticket() -> None:
    [action] = render_actions(ITEM, preview_context(ITEM, INPUTS))

    description = action.spec["description"]
    assert "[click here|" not in description
    assert "{html}" not in description
    assert r"\[click here\|http://evil.example/login\] \{html\}" in description
    assert "\n\\|\\| a \\|\\| b \\|\\|" in description
    # The template's own markup stays markup.
    assert "|| Setting || Value ||" in description
    assert "| Name | orders_eu |" in description


def test_only_the_fields_jira_shows_as_markup_are_escaped() -> None:
    context = preview_context(ITEM, {**INPUTS, "environment": "prod"})
    spec = {**ITEM["fulfillment"]["actions"][0]["jira"], "labels": ["{{ inputs.owner_email }}"]}

    rendered = render_spec("jira", spec, context, "/jira")

    assert rendered["labels"] == [HOSTILE]
    assert rendered["priority"] == "High"
    assert rendered["summary"] == "PostgreSQL orders_eu (small, prod)"


def test_an_input_passed_through_the_jira_filter_is_not_escaped_twice() -> None:
    context = preview_context(ITEM, INPUTS)
    spec = {"summary": "{{ inputs.owner_email | jira }}", "description": "{{ inputs.owner_email }}"}

    rendered = render_spec("jira", spec, context, "/jira")

    assert rendered["summary"] == rendered["description"]
    assert rendered["summary"].startswith(r"\[click here\|")


def test_a_preview_renders_what_the_run_renders() -> None:
    context = preview_context(ITEM, INPUTS)
    [previewed] = render_actions(ITEM, context)

    run = render_spec("jira", ITEM["fulfillment"]["actions"][0]["jira"], context, "/jira")

    assert previewed.spec == run
