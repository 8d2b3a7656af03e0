"""Phases 3 and 4: substitution in the sandbox, PAO's filters, typed outputs, and limits."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from pao.spec.rendering import (
    RenderError,
    apply_defaults,
    preview_context,
    redact_value,
    render_actions,
    render_string,
)

CONTEXT = {
    "user": {"id": "dana", "name": "Dana", "email": "dana@example.com", "teams": ["payments"]},
    "request": {
        "id": "req-1",
        "correlation_id": "c-1",
        "created_at": "2026-11-26T00:00:00Z",
        "environment": "prod",
    },
    "inputs": {
        "name": "Orders API (EU)",
        "size": 3,
        "ha": True,
        "tags": ["a", "b"],
        "db": {"name": "orders"},
    },
    "item": {"id": "postgresql-rds", "version": "1.2.0"},
    "system": {"platform_name": "PAO", "region": "eu-west-1"},
    "env": {"account_id": "123456789012"},
    "outputs": {"create_ticket": {"key": "DBA-7"}},
    "secrets": {"db_password": "***"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ user.email }}", "dana@example.com"),
        ("{{ request.environment }}", "prod"),
        ("{{ inputs.db.name }}", "orders"),
        ("{{ item.version }}", "1.2.0"),
        ("{{ system.region }}", "eu-west-1"),
        ("{{ env.account_id }}", "123456789012"),
        ("{{ outputs.create_ticket.key }}", "DBA-7"),
        ("{{ secrets.db_password }}", "***"),
        ("{{ user.teams | join(',') }}", "payments"),
    ],
)
def test_every_scope_substitutes(template: str, expected: str) -> None:
    assert render_string(template, CONTEXT) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.name | upper }}", "ORDERS API (EU)"),
        ("{{ inputs.name | lower }}", "orders api (eu)"),
        ("{{ inputs.name | slug }}", "orders-api-eu"),
        ("{{ inputs.tags | concat(['c']) | join('') }}", "abc"),
        ("{{ 'x' | concat('y', 'z') }}", "xyz"),
        ("{{ inputs.missing | default('none') }}", "none"),
        ("{{ inputs.name | replace('EU', 'US') }}", "Orders API (US)"),
        ("{{ '  x  ' | trim }}", "x"),
        ("{{ inputs.name | truncate(9, true, '') }}", "Orders AP"),
        ("{{ inputs.db | json }}", '{"name": "orders"}'),
        ("{{ inputs.db | yaml }}", "name: orders"),
        ("{{ 'pao' | b64encode }}", "cGFv"),
        ("{{ 'cGFv' | b64decode }}", "pao"),
        ("{{ inputs.name | regex_replace('[^A-Za-z]', '') }}", "OrdersAPIEU"),
        ("{{ 'a<b & \"c\"' | xml }}", "a&lt;b &amp; &quot;c&quot;"),
    ],
)
def test_post_processing_filters(template: str, expected: str) -> None:
    assert render_string(template, CONTEXT) == expected


def test_the_sha256_filter_is_the_real_digest() -> None:
    import hashlib

    assert render_string("{{ 'pao' | sha256 }}", CONTEXT) == hashlib.sha256(b"pao").hexdigest()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.size }}", 3),
        ("{{ inputs.size * 2 }}", 6),
        ("{{ inputs.ha }}", True),
        ("{{ not inputs.ha }}", False),
        ("{{ inputs.tags }}", ["a", "b"]),
        ("{{ inputs.size }} pods", "3 pods"),
        ("plain", "plain"),
    ],
)
def test_a_lone_expression_keeps_its_type(template: str, expected: object) -> None:
    assert render_string(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ inputs.__class__ }}",
        "{{ range(100000) | list | length }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ 'x' * 100000000 }}",
        "{{ 'a'.center(100000000) }}",
        "{{ 9 ** 99999 }}",
        "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}",
        "{{ inputs.name | regex_replace('(a|aa)+$', '') if ('a' * 40 + 'b') | "
        "regex_replace('(a|aa)+$', '') }}",
    ],
)
def test_sandbox_escapes_and_runaway_templates_are_refused_clearly(template: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_string(template, CONTEXT)
    message = caught.value.message
    assert "sandbox" in message or "undefined" in message, message


def test_strict_undefined_names_the_missing_value() -> None:
    with pytest.raises(RenderError, match="has no attribute 'hostname'"):
        render_string("{{ inputs.hostname }}", CONTEXT)


def test_defaults_fill_absent_fields_only() -> None:
    form = {"properties": {"a": {"default": 1}, "b": {"default": 2}, "c": {}}}
    assert apply_defaults(form, {"a": 5}) == {"a": 5, "b": 2}


def test_every_catalog_item_renders_from_each_of_its_examples() -> None:
    for path in (REPO / "catalog").glob("*/*.yaml"):
        item = yaml.safe_load(path.read_text())
        if item.get("kind") != "CatalogItem":
            continue
        for example in item["form"]["schema"]["examples"]:
            actions = render_actions(item, preview_context(item, example))
            assert actions, path
            assert all(isinstance(a.spec, dict) for a in actions if a.run)


def test_the_when_condition_decides_whether_an_action_runs() -> None:
    item = {
        "metadata": {"id": "x", "version": "1.0.0"},
        "form": {"schema": {"properties": {"on": {"type": "boolean"}}}},
        "fulfillment": {
            "actions": [
                {
                    "name": "a",
                    "type": "rest",
                    "when": "{{ inputs.on }}",
                    "rest": {"method": "GET", "url": "https://x/{{ inputs.on }}"},
                },
            ]
        },
    }
    off = render_actions(item, preview_context(item, {"on": False}))[0]
    assert (off.run, off.spec) == (False, None)  # not rendered: its fields may not exist
    on = render_actions(item, preview_context(item, {"on": True}))[0]
    assert (on.run, on.spec) == (True, {"method": "GET", "url": "https://x/True"})


def test_redaction_reaches_keys_and_nested_strings() -> None:
    value = {"a": ["x-secret-y", {"secret": 1}], "b": 2}
    assert redact_value(value, ["secret"]) == {"a": ["x-***-y", {"***": 1}], "b": 2}
