"""Properties of the variables engine, for arbitrary templates and contexts (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pao.spec.explain import explain_template
from pao.spec.rendering import RenderError, render_string
from pao.spec.validation import validate_text
from pao.spec.variables import SCOPES, parse_template

SECRET = "s3cr3t-Pl4nted-Value-9481"

names = st.sampled_from([*SCOPES, "x", "loop", "range", "cycler", "__class__", "self"])
attributes = st.sampled_from(
    ["name", "id", "db", "__class__", "__init__", "__globals__", "keys", "items", "mro", "0", "x"]
)
filters = st.sampled_from(
    [
        "upper",
        "slug",
        "json",
        "b64decode",
        "sha256",
        "default('d')",
        "truncate(3)",
        "regex_replace('a+', 'b')",
        "shout",
        "attr('x')",
        "concat('y')",
        "int",
        "list",
        "join(',')",
    ]
)
expressions = st.builds(
    lambda base, attrs, fs: ".".join([base, *attrs]) + "".join(f" | {f}" for f in fs),
    names,
    st.lists(attributes, max_size=3),
    st.lists(filters, max_size=2),
)
pieces = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="{}%#"), max_size=20),
    expressions.map(lambda e: "{{ " + e + " }}"),
    expressions.map(lambda e: "{% if " + e + " %}yes{% endif %}"),
    expressions.map(lambda e: "{% for v in " + e + " %}{{ v }}{% endfor %}"),
    st.sampled_from(
        [
            "{{",
            "}}",
            "{%",
            "%}",
            "{{ 1 +",
            "{% endif %}",
            "{{ 9 ** 9999 }}",
            "{{ 'x' * 999999 }}",
            "{% for i in range(5000) %}{% endfor %}",
        ]
    ),
)
templates = st.lists(pieces, max_size=6).map("".join)

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=12)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["name", "id", "db", "x"]), children, max_size=3),
    ),
    max_leaves=8,
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        scope: st.dictionaries(st.sampled_from(["name", "id", "db", "x"]), json_values, max_size=3)
        for scope in SCOPES
    },
)

FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@FAST
@given(templates)
def test_parsing_never_raises(template: str) -> None:
    parsed = parse_template(template)
    assert parsed.syntax_error is None or parsed.error_line is not None


@FAST
@given(templates, contexts)
def test_rendering_raises_only_the_engines_own_error(template: str, context: dict) -> None:
    try:
        render_string(template, context)
    except RenderError as exc:  # the only exception allowed out, and it explains itself
        message = exc.message
        assert message


@FAST
@given(templates, contexts)
def test_a_planted_secret_never_appears_in_test_variables(template: str, context: dict) -> None:
    context = {**context, "secrets": {"api_token": SECRET, "db": SECRET}}
    answer = json.dumps(explain_template(template, context), default=str)
    assert SECRET not in answer


@FAST
@given(templates)
def test_validating_an_item_with_any_template_never_raises(template: str) -> None:
    item = f"""
apiVersion: pao.dev/v1
kind: CatalogItem
metadata: {{id: prop-item, name: Property, category: compute, owner: team-x, version: 1.0.0,
           description: An item built by a property test.}}
form:
  schema:
    type: object
    properties: {{name: {{type: string}}}}
    examples: [{{name: a}}]
fulfillment:
  mode: manual
  actions:
    - name: create_ticket
      type: jira
      jira: {{project: P, issue_type: Task, summary: {json.dumps(template)}}}
"""
    report = validate_text(item, "prop.yaml")
    for problem in report.problems:
        assert problem.message
