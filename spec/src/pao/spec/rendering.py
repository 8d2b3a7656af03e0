"""The variables engine, phases 3 and 4: substitute values into an item's templates.

Rendering uses the same sandboxed environment as parsing. A template that is a single expression
keeps the type of its value (a number or boolean stays one, for Terraform variables); anything else
renders to a string.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError

from pao.spec.filters import jira_text
from pao.spec.sandbox import (
    ENVIRONMENT,
    MAX_OUTPUT,
    TemplateLimitError,
    check_value,
    deadline,
    source_cache,
    tick,
)

SECRET_MASK = "***"  # noqa: S105 - the mask, not a secret


class RenderError(Exception):
    """A template could not be rendered; says where and why, never with a secret in it."""

    def __init__(self, where: str, message: str, line: int | None = None) -> None:
        self.where = where
        self.message = message
        self.line = line
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RenderedAction:
    """An action with every template filled in."""

    name: str
    type: str
    run: bool
    #: None when the action's condition is false: it would not run, so it is not rendered
    #: (its templates may use fields that only exist when it runs)
    spec: dict[str, Any] | None


def apply_defaults(form_schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with each absent top-level field that has a default set to it."""
    filled = dict(inputs)
    for name, prop in (form_schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, Mapping) and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    return filled


@source_cache(maxsize=2_048)
def _expression(source: str) -> Template | None:
    """For a template that is one `{{ expression }}`, a template that stores the expression's
    value (so it keeps its type); None for any other template."""
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    try:
        body = ENVIRONMENT.parse(stripped).body
    except TemplateError:
        return None
    if not (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    ):
        return None
    # What jinja2's compile_expression builds, kept so the context need not be copied per call.
    return ENVIRONMENT.from_string("{% set result = " + stripped[2:-2].strip() + " %}")


@source_cache(maxsize=2_048)
def _template(source: str) -> Template:
    return ENVIRONMENT.from_string(source)


def _prepare(context: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a render sees: the sandbox's globals, then the context's scopes."""
    return {**ENVIRONMENT.globals, **context}


def render_string(source: str, context: Mapping[str, Any], *, where: str = "template") -> Any:
    """Render one template; a lone expression keeps its value's type (number, boolean, list)."""
    with deadline():
        return _render(source, _prepare(context), where)


def render_value(value: Any, context: Mapping[str, Any], where: str) -> Any:
    """Render every string inside a JSON-like value (one deadline for all of them)."""
    with deadline():
        return _render_value(value, _prepare(context), where)


#: The fields of a jira action that JIRA shows as wiki markup (see `render_spec`).
JIRA_MARKUP_FIELDS = ("summary", "description")


def render_spec(kind: str, spec: Any, context: Mapping[str, Any], where: str) -> Any:
    """An action's spec rendered against `context`: the one renderer of previews and runs.

    In a jira action's summary and description every input is escaped for JIRA wiki markup
    before it is substituted, so a requester's `[link|http://...]`, `{html}` or `||` is shown
    as typed, never interpreted; the template's own markup is kept. An input that a template
    passes through the `jira` filter as well is not escaped twice.
    """
    with deadline():
        return _render_spec(kind, spec, _prepare(context), where)


def _render_spec(kind: str, spec: Any, prepared: dict[str, Any], where: str) -> Any:
    if kind != "jira" or not isinstance(spec, dict):
        return _render_value(spec, prepared, where)
    shown = {**prepared, "inputs": _jira_escaped(prepared.get("inputs") or {})}
    rendered = {}
    for key, value in spec.items():
        scopes = shown if key in JIRA_MARKUP_FIELDS else prepared
        rendered[key] = _render_value(value, scopes, f"{where}/{key}")
    return rendered


def _jira_escaped(value: Any) -> Any:
    if isinstance(value, str):
        return jira_text(value)
    if isinstance(value, dict):
        return {k: _jira_escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jira_escaped(v) for v in value]
    return value


def _render_value(value: Any, prepared: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        return _render(value, prepared, where)
    if isinstance(value, dict):
        return {k: _render_value(v, prepared, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, prepared, f"{where}/{i}") for i, v in enumerate(value)]
    return value


def _render(source: str, prepared: dict[str, Any], where: str) -> Any:
    if "{" not in source:
        return source
    try:
        expression = _expression(source)
        if expression is not None:
            context = expression.new_context(prepared, shared=True)
            for _ in expression.root_render_func(context):
                tick()
            value = check_value(context.vars["result"], "the value")
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            if isinstance(value, bool | int | float | list | dict) or value is None:
                return value
            text = str(value)
        else:
            text = _bounded_render(_template(source), prepared)
    except TemplateSyntaxError as exc:
        raise RenderError(where, f"syntax error: {exc.message}", exc.lineno) from None
    except UndefinedError as exc:
        raise RenderError(where, f"undefined value: {exc.message}") from None
    except (TemplateLimitError, SecurityError) as exc:
        raise RenderError(where, f"refused by the sandbox: {exc}") from None
    except TemplateError as exc:
        raise RenderError(where, exc.message or type(exc).__name__) from None
    except RecursionError:
        raise RenderError(where, "refused by the sandbox: recursion too deep") from None
    except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError) as exc:
        raise RenderError(where, f"{type(exc).__name__}: {exc}") from None
    if len(text) > MAX_OUTPUT:
        raise RenderError(
            where,
            f"refused by the sandbox: output of {len(text)} characters; the limit is {MAX_OUTPUT}",
        )
    return text


def _bounded_render(template: Template, prepared: dict[str, Any]) -> str:
    size = 0
    chunks = []
    for chunk in template.root_render_func(template.new_context(prepared, shared=True)):
        tick()
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateLimitError(f"output beyond {MAX_OUTPUT} characters")
        chunks.append(chunk)
    return "".join(chunks)


SAMPLE_USER = {
    "id": "developer",
    "name": "Dev Eloper",
    "email": "developer@example.com",
    "teams": ["platform"],
}
SAMPLE_SYSTEM = {
    "platform_name": "PAO",
    "region": "us-east-1",
    "jira_url": "https://jira",
    "gateway_url": "https://pao",
}


def placeholder_outputs(item: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Stand-ins for the outputs of every action (`<action.key>`), for previews."""
    outputs: dict[str, dict[str, Any]] = {}
    for action in item["fulfillment"]["actions"]:
        spec = action.get(action["type"]) or {}
        declared = [*(spec.get("outputs") or []), *((spec.get("poll") or {}).get("outputs") or [])]
        keys = {"jira": ["key", "url", "id", "status"], "rest": ["status_code"]}.get(
            action["type"], []
        )
        outputs[action["name"]] = {k: f"<{action['name']}.{k}>" for k in [*keys, *declared]}
    return outputs


def user_scope(user: Mapping[str, Any]) -> dict[str, Any]:
    """The `user` scope from a requester: a missing name is the user id, a missing e-mail empty."""
    return {
        "id": user["id"],
        "name": user.get("name") or user["id"],
        "email": user.get("email") or "",
        "teams": list(user.get("teams") or ()),
    }


def template_context(
    item: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    user: Mapping[str, Any],
    system: Mapping[str, Any],
    environments: Mapping[str, Mapping[str, Any]],
    request_id: str,
    correlation_id: str,
    created_at: str,
    outputs: Mapping[str, Mapping[str, Any]],
    default_environment: str = "dev",
    environment: str | None = None,
    secrets: Mapping[str, Any] | None = None,
    kind: str = "create",
    resource_id: str | None = None,
    resource_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The scopes every template of `item` renders against: the one builder for previews,
    validation, `test/variables` and execution alike, so a preview renders what a run renders.

    `resource_outputs` are what the resource's earlier requests recorded, by action (an update
    or a decommission uses them, e.g. an id the API assigned at creation).
    `secrets` defaults to every declared secret shown as the mask; only an executor passes the
    real values, for its own call.
    """
    metadata = item["metadata"]
    filled = apply_defaults(item["form"]["schema"], inputs)
    environment = environment or str(filled.get("environment") or default_environment)
    return {
        "user": user_scope(user),
        "request": {
            "id": request_id,
            "correlation_id": correlation_id,
            "created_at": created_at,
            "environment": environment,
            "item_id": metadata["id"],
            "item_version": metadata["version"],
            "kind": kind,
            "resource_id": resource_id or request_id,
        },
        "item": {
            k: metadata.get(k)
            for k in ("id", "name", "version", "category", "owner", "description", "tags")
        },
        "system": dict(system),
        "env": dict(environments.get(environment) or {}),
        "inputs": filled,
        "outputs": {name: dict(values) for name, values in outputs.items()},
        "resource": {
            "id": resource_id or request_id,
            "outputs": {name: dict(values) for name, values in (resource_outputs or {}).items()},
        },
        "secrets": (
            dict(secrets)
            if secrets is not None
            else dict.fromkeys(item.get("secrets") or {}, SECRET_MASK)
        ),
    }


def preview_context(
    item: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    user: Mapping[str, Any] | None = None,
    system: Mapping[str, Any] | None = None,
    environments: Mapping[str, Mapping[str, Any]] | None = None,
    default_environment: str = "dev",
    request_id: str = "req-preview",
    correlation_id: str = "corr-preview",
) -> dict[str, Any]:
    """`template_context` for a request not made yet: the caller (or a sample user),
    placeholders for the outputs of earlier actions and of the resource's earlier requests, and
    every secret masked."""
    return template_context(
        item,
        inputs,
        user=user or SAMPLE_USER,
        system=system or SAMPLE_SYSTEM,
        environments=environments or {},
        default_environment=default_environment,
        request_id=request_id,
        correlation_id=correlation_id,
        created_at=datetime.now(UTC).isoformat(),
        outputs=placeholder_outputs(item),
        resource_outputs=placeholder_outputs(item),
    )


def render_actions(item: Mapping[str, Any], context: Mapping[str, Any]) -> list[RenderedAction]:
    """Every action of an item rendered against `context`, in order."""
    rendered = []
    prepared = _prepare(context)
    with deadline():
        for index, action in enumerate(item["fulfillment"]["actions"]):
            where = f"/fulfillment/actions/{index}"
            run = True
            if "when" in action:
                run = bool(_render(action["when"], prepared, f"{where}/when"))
            kind = action["type"]
            spec = _render_spec(kind, action[kind], prepared, f"{where}/{kind}") if run else None
            rendered.append(RenderedAction(action["name"], kind, run, spec))
    return rendered


def redact_value(value: Any, secrets: list[str]) -> Any:
    """A JSON-like value with every occurrence of a secret value in its strings replaced by ***."""
    live = sorted((s for s in secrets if s), key=len, reverse=True)
    if not live:
        return value

    def clean(text: str) -> str:
        for secret in live:
            text = text.replace(secret, SECRET_MASK)
        return text

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return clean(v)
        if isinstance(v, dict):
            return {clean(str(k)): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)
