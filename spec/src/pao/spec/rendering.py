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

from jinja2 import TemplateError, nodes

from pao.spec.variables import ENVIRONMENT

SECRET_MASK = "***"  # noqa: S105 - the mask, not a secret


class RenderError(Exception):
    """A template could not be rendered; names where."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RenderedAction:
    """An action with every template filled in."""

    name: str
    type: str
    run: bool
    spec: dict[str, Any]


def apply_defaults(form_schema: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with each absent top-level field that has a default set to it."""
    filled = dict(inputs)
    for name, prop in (form_schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, Mapping) and "default" in prop:
            filled[name] = copy.deepcopy(prop["default"])
    return filled


def _single_expression(source: str) -> bool:
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return False
    try:
        body = ENVIRONMENT.parse(stripped).body
    except TemplateError:
        return False
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )


def render_string(source: str, context: Mapping[str, Any], *, where: str = "template") -> Any:
    """Render one template; a lone expression keeps its value's type."""
    if "{" not in source:
        return source
    try:
        if _single_expression(source):
            expression = ENVIRONMENT.compile_expression(
                source.strip()[2:-2].strip(), undefined_to_none=False
            )
            value = expression(**context)
            if isinstance(value, bool | int | float) or value is None:
                return value
            return str(value) if not isinstance(value, list | dict) else value
        return ENVIRONMENT.from_string(source).render(**context)
    except TemplateError as exc:
        raise RenderError(where, exc.message or str(exc)) from exc
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise RenderError(where, str(exc)) from exc


def render_value(value: Any, context: Mapping[str, Any], where: str) -> Any:
    """Render every string inside a JSON-like value."""
    if isinstance(value, str):
        return render_string(value, context, where=where)
    if isinstance(value, dict):
        return {k: render_value(v, context, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, f"{where}/{i}") for i, v in enumerate(value)]
    return value


def preview_context(
    item: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    user: Mapping[str, Any] | None = None,
    request_id: str = "req-preview",
) -> dict[str, Any]:
    """A context for previews: sample user and request, placeholders for outputs, masked secrets."""
    metadata = item["metadata"]
    filled = apply_defaults(item["form"]["schema"], inputs)
    outputs: dict[str, dict[str, Any]] = {}
    for action in item["fulfillment"]["actions"]:
        declared = (action.get(action["type"]) or {}).get("outputs") or []
        keys = {"jira": ["key", "url", "id", "status"], "rest": ["status_code"]}.get(
            action["type"], []
        )
        outputs[action["name"]] = {k: f"<{action['name']}.{k}>" for k in [*keys, *declared]}
    return {
        "user": dict(
            user
            or {
                "id": "developer",
                "name": "Dev Eloper",
                "email": "developer@example.com",
                "teams": ["platform"],
            }
        ),
        "request": {
            "id": request_id,
            "correlation_id": "corr-preview",
            "created_at": datetime.now(UTC).isoformat(),
            "environment": filled.get("environment", "dev"),
            "item_id": metadata["id"],
            "item_version": metadata["version"],
        },
        "item": {
            k: metadata.get(k)
            for k in ("id", "name", "version", "category", "owner", "description", "tags")
        },
        "system": {
            "platform_name": "PAO",
            "region": "us-east-1",
            "jira_url": "https://jira",
            "gateway_url": "https://pao",
        },
        "env": {},
        "inputs": filled,
        "outputs": outputs,
        "secrets": {name: SECRET_MASK for name in (item.get("secrets") or {})},
    }


def render_actions(item: Mapping[str, Any], context: Mapping[str, Any]) -> list[RenderedAction]:
    """Every action of an item rendered against `context`, in order."""
    rendered = []
    for index, action in enumerate(item["fulfillment"]["actions"]):
        where = f"/fulfillment/actions/{index}"
        run = True
        if "when" in action:
            run = bool(render_string(action["when"], context, where=f"{where}/when"))
        kind = action["type"]
        spec = render_value(action[kind], context, f"{where}/{kind}")
        rendered.append(RenderedAction(action["name"], kind, run, spec))
    return rendered
