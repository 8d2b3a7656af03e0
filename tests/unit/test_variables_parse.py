"""Phases 1 and 2 of the variables engine: references found, then resolved against declarations."""

from __future__ import annotations

from pao.spec.variables import Declarations, input_fields, parse_template, resolve

FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "db": {"type": "object", "properties": {"name": {"type": "string"}}},
        "ingress": {"type": "boolean"},
    },
    "allOf": [
        {
            "if": {"properties": {"ingress": {"const": True}}},
            "then": {"properties": {"hostname": {"type": "string"}}},
        }
    ],
}


def declared(**outputs: frozenset[str] | None) -> Declarations:
    return Declarations(
        inputs=input_fields(FORM), secrets=frozenset({"api_token"}), outputs=outputs
    )


def paths(source: str) -> list[str]:
    return [r.dotted for r in parse_template(source).references]


def test_full_dotted_paths_are_collected() -> None:
    assert paths("{{ inputs.db.name }} and {{ inputs['name'] }}") == [
        "inputs.db.name",
        "inputs.name",
    ]


def test_filters_and_their_arguments_are_seen() -> None:
    parsed = parse_template("{{ inputs.name | default(user.name) | upper }}")
    assert {f for f, _ in parsed.filters} == {"default", "upper"}
    assert sorted(paths("{{ inputs.name | default(user.name) | upper }}")) == [
        "inputs.name",
        "user.name",
    ]


def test_loop_and_set_variables_are_local() -> None:
    source = "{% for t in user.teams %}{{ t }}{% endfor %}{% set x = 1 %}{{ x }}"
    assert paths(source) == ["user.teams"]


def test_plain_strings_are_not_templates() -> None:
    assert not parse_template("just text").is_template
    assert parse_template("just text").references == ()


def test_a_syntax_error_is_reported_with_its_line() -> None:
    parsed = parse_template("line one\n{{ inputs.name }")
    assert parsed.syntax_error
    assert parsed.error_line == 2


def test_conditional_form_fields_resolve() -> None:
    assert resolve(parse_template("{{ inputs.hostname }}"), declared()) == []


def test_unknown_inputs_scopes_and_fields_are_named_with_a_suggestion() -> None:
    issues = resolve(parse_template("{{ inputs.nmae }} {{ usr.id }} {{ request.idd }}"), declared())
    messages = [i.message for i in issues]
    assert "inputs.nmae is not a field of the form (did you mean 'name'?)" in messages
    assert any(m.startswith("unknown scope 'usr' (did you mean 'user'?)") for m in messages)
    assert any(m.startswith("request.idd does not exist (did you mean 'id'?)") for m in messages)


def test_nested_input_fields_are_checked() -> None:
    assert resolve(parse_template("{{ inputs.db.name }}"), declared()) == []
    issues = resolve(parse_template("{{ inputs.db.nam }}"), declared())
    assert issues[0].message.startswith("inputs.db.nam is not a field")


def test_outputs_must_come_from_earlier_actions_and_known_keys() -> None:
    ok = declared(create_ticket=frozenset({"key", "url"}))
    assert resolve(parse_template("{{ outputs.create_ticket.key }}"), ok) == []
    assert (
        "not an output" in resolve(parse_template("{{ outputs.create_ticket.kye }}"), ok)[0].message
    )
    assert (
        "not an earlier action" in resolve(parse_template("{{ outputs.later.key }}"), ok)[0].message
    )


def test_secrets_must_be_declared() -> None:
    assert resolve(parse_template("{{ secrets.api_token }}"), declared()) == []
    assert (
        "not declared"
        in resolve(parse_template("{{ secrets.db_password }}"), declared())[0].message
    )


def test_unknown_filters_are_errors_at_validation_time() -> None:
    issues = resolve(parse_template("{{ inputs.name | shout }}"), declared())
    assert [i.rule for i in issues] == ["template-filter"]
