"""Phase 3 routes: validate a request before submitting it, preview a form, test variables."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.preview import PreviewFormBody, TestVariablesBody, ValidateRequestBody
from pao.gateway.bodies import read_model
from pao.gateway.identity import requester_of
from pao.gateway.resources import CATALOG, CORRELATION_ID, IDENTITY, SETTINGS
from pao.shared.environments import environments, system_scope
from pao.spec.explain import explain_template, merge_context, templates_of
from pao.spec.forms import describe_form, input_problems
from pao.spec.lifecycle import check_mode, manual_ticket, runs_manual_ticket
from pao.spec.rendering import (
    RenderError,
    preview_context,
    redact_value,
    render_actions,
    render_spec,
)
from pao.spec.validation import declared_outputs
from pao.spec.variables import Declarations, input_fields

routes = web.RouteTableDef()


def catalog_item(request: web.Request, item_id: str) -> dict[str, Any]:
    """A served item, or 404 naming it."""
    item = request.app[CATALOG].view.items.get(item_id)
    if item is None:
        raise PaoError(
            errors.ITEM_NOT_FOUND,
            f"no catalog item '{item_id}'",
            details=[ErrorDetail(field="/item_id", message=item_id)],
        )
    return item


def context_for(request: web.Request, item: dict[str, Any], inputs: dict[str, Any]) -> dict:
    """A preview context for the caller: their identity, platform settings, secrets masked."""
    settings = request.app[SETTINGS]
    return preview_context(
        item,
        inputs,
        user=requester_of(request[IDENTITY]).model_dump(),
        system=system_scope(settings),
        environments=environments(settings),
        default_environment=settings.default_environment,
        correlation_id=request[CORRELATION_ID],
    )


@routes.post("/api/v1/validate/request")
async def validate_request(request: web.Request) -> web.Response:
    """Inputs against the form (conditionals included), then a dry render of every action."""
    body = await read_model(request, ValidateRequestBody)
    item = catalog_item(request, body.item_id)
    # Patterns and templates run in a worker thread, under their own time limits, so that a slow
    # one holds up this request only, never the event loop.
    found = await asyncio.to_thread(input_problems, item["form"]["schema"], body.inputs)
    problems = [p.as_dict() for p in found]
    answer: dict[str, Any] = {"item_id": body.item_id, "item_version": item["metadata"]["version"]}
    if problems:
        return web.json_response({**answer, "valid": False, "problems": problems})
    context = context_for(request, item, body.inputs)
    if body.mode is not None and runs_manual_ticket(item, check_mode(item, body.mode)):
        # In manual mode the request runs the item's manual ticket instead of its actions.
        item = {**item, "fulfillment": {**item["fulfillment"], "actions": [manual_ticket(item)]}}
    try:
        rendered = await asyncio.to_thread(render_actions, item, context)
    except RenderError as exc:
        return web.json_response(
            {
                **answer,
                "valid": False,
                "problems": [
                    {
                        "rule": "render",
                        "message": exc.message,
                        "pointer": exc.where,
                        "line": exc.line,
                    }
                ],
            }
        )
    return web.json_response(
        {
            **answer,
            "valid": True,
            "actions": [
                {"name": a.name, "type": a.type, "run": a.run, "spec": a.spec} for a in rendered
            ],
        }
    )


@routes.post("/api/v1/preview/form")
async def preview_form(request: web.Request) -> web.Response:
    """The form as a UI shows it: fields in order, which are visible and required so far."""
    body = await read_model(request, PreviewFormBody)
    item = catalog_item(request, body.item_id)
    described = await asyncio.to_thread(
        describe_form, item["form"]["schema"], body.inputs, order=item["form"].get("order")
    )
    metadata = item["metadata"]
    return web.json_response(
        {
            "item_id": metadata["id"],
            "item_version": metadata["version"],
            "title": metadata["name"],
            "description": metadata["description"],
            **described.as_dict(),
        }
    )


@routes.post("/api/v1/test/variables")
async def test_variables(request: web.Request) -> web.Response:
    """Each phase of the variables engine for a template, or for every template of an action."""
    body = await read_model(request, TestVariablesBody)
    answer = await asyncio.to_thread(_explain, request, body)
    # Secret values given in the context are never rendered (secrets show as ***); in case one
    # also appears elsewhere in the context, it is blanked out of the answer too.
    given = body.context.get("secrets")
    planted = [v for v in (given.values() if isinstance(given, dict) else []) if isinstance(v, str)]
    return web.json_response(redact_value(answer, planted))


def _explain(request: web.Request, body: TestVariablesBody) -> dict[str, Any]:
    if body.template is not None:
        return explain_template(body.template, body.context)
    item = catalog_item(request, body.item_id or "")
    actions = item["fulfillment"]["actions"]
    index = next((i for i, a in enumerate(actions) if a["name"] == body.action), None)
    if index is None:
        names = ", ".join(a["name"] for a in actions)
        raise PaoError(
            errors.NOT_FOUND,
            f"{body.item_id} has no action '{body.action}'",
            details=[ErrorDetail(field="/action", message=f"actions: {names}")],
        )
    action = actions[index]
    inputs = body.context.get("inputs") or (item["form"]["schema"].get("examples") or [{}])[0]
    context = merge_context(context_for(request, item, inputs), body.context)
    declared = Declarations(
        inputs=input_fields(item["form"]["schema"]),
        secrets=frozenset(item.get("secrets") or {}),
        outputs={a["name"]: declared_outputs(a) for a in actions[:index]},
        resource_outputs={a["name"]: declared_outputs(a) for a in actions},
    )
    kind = action["type"]
    templates = [
        {
            "field": f"/fulfillment/actions/{index}/{kind}{path}",
            **explain_template(source, context, declared),
        }
        for path, source in templates_of(action[kind])
    ]
    try:
        rendered: Any = render_spec(
            kind,
            action[kind],
            {**context, "secrets": {n: "***" for n in context.get("secrets") or {}}},
            f"/fulfillment/actions/{index}",
        )
        render_error = None
    except RenderError as exc:
        rendered, render_error = None, {"where": exc.where, "message": exc.message}
    return {
        "item_id": body.item_id,
        "action": body.action,
        "type": kind,
        "templates": templates,
        "rendered": rendered,
        "error": render_error,
    }
