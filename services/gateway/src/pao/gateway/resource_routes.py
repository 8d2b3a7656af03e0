"""Resources: what requests made; list and show them, update or decommission them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pao.contracts import errors
from pao.contracts.commands import SubmitRequest
from pao.contracts.errors import ErrorDetail, PaoError
from pao.contracts.requests import DecommissionBody, UpdateResourceBody
from pao.gateway import caching
from pao.gateway.bodies import read_model
from pao.gateway.identity import requester_of
from pao.gateway.params import int_param, text_param
from pao.gateway.requests import viewer_of
from pao.gateway.resources import (
    CATALOG,
    CORRELATION_ID,
    IDENTITY,
    POOL,
    SETTINGS,
    STORE,
    read_pool,
)
from pao.request import handlers, queries
from pao.shared.environments import environments, system_scope

routes = web.RouteTableDef()

#: How long a read waits for a resource just made to reach the read model.
_PROJECTION_WAIT = 2.0


def _not_found(resource_id: str) -> PaoError:
    return PaoError(
        errors.RESOURCE_NOT_FOUND,
        f"no resource {resource_id} that you may see",
        details=[ErrorDetail(field="resource_id", message=resource_id)],
    )


@routes.get("/api/v1/resources")
async def list_resources(request: web.Request) -> web.Response:
    """The resources the caller may see (their own, their teams' items'), filtered and paged."""
    state = text_param(request, "state")
    if state is not None and state not in queries.RESOURCE_STATES:
        message = f"state must be one of {', '.join(queries.RESOURCE_STATES)}"
        raise PaoError(
            errors.INVALID_QUERY, message, details=[ErrorDetail(field="state", message=message)]
        )
    where = queries.ResourceFilter(
        item_id=text_param(request, "item_id"),
        team=text_param(request, "team"),
        owner=text_param(request, "owner"),
        state=state,
        environment=text_param(request, "environment"),
    )
    limit = int_param(request, "limit", 50, low=1, high=500)
    offset = int_param(request, "offset", 0, low=0, high=10_000_000)
    total, rows = await queries.list_resources(
        read_pool(request.app), viewer_of(request[IDENTITY]), where, limit=limit, offset=offset
    )
    return web.json_response({"total": total, "limit": limit, "offset": offset, "resources": rows})


async def _visible(request: web.Request) -> dict[str, Any]:
    resource_id = request.match_info["resource_id"]
    if "\x00" in resource_id:  # PostgreSQL text cannot hold it: no resource has it
        raise _not_found(resource_id)
    versions = request.app[caching.VERSIONS]
    token = versions.reading()
    found = await queries.get_resource(
        request.app[POOL], resource_id, wait_seconds=_PROJECTION_WAIT
    )
    if found is not None:
        visible = {"requester": found["owner"], "owner_team": found["owner_team"]}
        known = caching.Known(_tag(found), visible)
        versions.remember(caching.resource_key(resource_id), token, known)
    if found is None or not viewer_of(request[IDENTITY]).may_see(
        {"requester": found["owner"], "owner_team": found["owner_team"]}
    ):
        raise _not_found(resource_id)
    return found


def _tag(found: dict[str, Any]) -> str:
    """A resource answer's tag: a digest of it (its row and its requests' rows)."""
    return caching.tag("resource", caching.digest(found))


@routes.get("/api/v1/resources/{resource_id}")
async def get_resource(request: web.Request) -> web.Response:
    """A resource, its inputs and outputs (secrets masked), and the requests that made and
    changed it."""
    if "If-None-Match" in request.headers:
        known = request.app[caching.VERSIONS].known(
            caching.resource_key(request.match_info["resource_id"])
        )
        if (
            known is not None
            and viewer_of(request[IDENTITY]).may_see(known.visible)
            and caching.matches(request, known.version)
        ):
            return caching.not_modified(known.version)
    found = await _visible(request)
    return caching.answer(request, _tag(found), found)


def _authorizer(request: web.Request):
    viewer = viewer_of(request[IDENTITY])

    def authorize(owned: handlers.Ownership) -> None:
        if not viewer.may_see({"requester": owned.requester, "owner_team": owned.owner_team}):
            raise _not_found(owned.request_id)

    return authorize


async def _change(
    request: web.Request,
    *,
    kind: str,
    inputs: dict[str, Any] | None,
    reason: str | None,
    mode: str | None,
) -> web.Response:
    resource = await _visible(request)
    view = request.app[CATALOG].view
    item = view.items.get(resource["item_id"])
    if item is None:
        message = f"the catalog no longer offers {resource['item_id']}"
        raise PaoError(
            errors.ITEM_NOT_FOUND,
            message,
            details=[ErrorDetail(field="item_id", message=message)],
        )
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise PaoError(
            errors.INVALID_INPUT,
            "Idempotency-Key must be 1 to 200 characters",
            details=[ErrorDetail(field="Idempotency-Key", message="length")],
        )
    command = SubmitRequest(
        item_id=resource["item_id"],
        inputs=inputs if inputs is not None else resource["inputs"],
        requester=requester_of(request[IDENTITY]),
        idempotency_key=f"{kind}:{resource['resource_id']}:{key}" if key else None,
        mode=mode,
    )
    settings = request.app[SETTINGS]
    outcome = await handlers.earlier_submit(command, store=request.app[STORE])
    if outcome is None:
        outcome = await handlers.change_resource(
            command,
            resource_id=resource["resource_id"],
            kind=kind,
            store=request.app[STORE],
            item=item,
            item_hash=view.hashes[resource["item_id"]],
            default_environment=settings.default_environment,
            correlation_id=request[CORRELATION_ID],
            authorize=_authorizer(request),
            system=system_scope(settings),
            environments=environments(settings),
            reason=reason,
            catalog_mode=view.mode_of(resource["item_id"]),
        )
    base = f"/api/v1/requests/{outcome.request_id}"
    headers = {"Location": base}
    if not outcome.created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(
        {
            "request_id": outcome.request_id,
            "status": "submitted",
            "kind": kind,
            "resource_id": resource["resource_id"],
            "links": {
                "self": base,
                "status": f"{base}/status",
                "logs": f"{base}/logs",
                "resource": f"/api/v1/resources/{resource['resource_id']}",
            },
        },
        status=202,
        headers=headers,
    )


@routes.post("/api/v1/resources/{resource_id}/update")
async def update(request: web.Request) -> web.Response:
    """Change the resource to new inputs (the whole set, checked against the item's form): a
    request of kind update; Terraform plans and applies the resource's workspace again."""
    body = await read_model(request, UpdateResourceBody)
    return await _change(request, kind="update", inputs=body.inputs, reason=None, mode=body.mode)


@routes.post("/api/v1/resources/{resource_id}/decommission")
async def decommission(request: web.Request) -> web.Response:
    """Remove the resource: a request of kind decommission running the item's teardown."""
    body = await read_model(request, DecommissionBody)
    return await _change(
        request, kind="decommission", inputs=None, reason=body.reason, mode=body.mode
    )
