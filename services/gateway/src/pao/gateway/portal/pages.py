"""The portal's pages: the catalog, an item, its request form, my requests, a request, what
waits for my approval, my resources.

Each page reads through the API's handlers (`api_get`) as the signed-in browser, so it shows
what the API would show that caller and refuses what the API refuses. What a page changes, its
script sends to the API itself (with the session's CSRF token), where audit and authorisation
apply as to any other call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from pao.contracts.errors import PaoError
from pao.gateway.middleware import browser_identity
from pao.gateway.portal.calls import api_get
from pao.gateway.portal.render import page
from pao.gateway.resources import IDENTITY, SETTINGS
from pao.shared.keystore import Identity

routes = web.RouteTableDef()

PAGE_SIZE = 20
_STATIC = files("pao.gateway.portal") / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: Request statuses from which each button's action can still apply (the API decides).
ENDED = ("completed", "failed", "aborted")

Page = Callable[[web.Request, Identity], Awaitable[tuple[str, dict[str, Any]]]]


def portal_page(section: str) -> Callable[[Page], Callable[[web.Request], Awaitable[web.Response]]]:
    """A page for a signed-in browser: without a session it says how to sign in; an API
    refusal (not found, forbidden, bad filter) is shown as a page with the same status."""

    def wrap(render: Page) -> Callable[[web.Request], Awaitable[web.Response]]:
        @functools.wraps(render)
        async def handler(request: web.Request) -> web.Response:
            found = await browser_identity(request)
            if found is None:
                return page(request, "sign_in.html", status=401, identity=None)
            identity, csrf = found
            request[IDENTITY] = identity
            common = {"identity": identity, "csrf": csrf, "section": section}
            try:
                template, context = await render(request, identity)
            except PaoError as exc:
                return page(request, "error.html", status=exc.code.http_status, error=exc, **common)
            return page(request, template, **common, **context)

        return handler

    return wrap


def _pages(total: int, offset: int, limit: int) -> dict[str, Any]:
    """Where the previous and next pages start, for the paging links."""
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "previous": max(0, offset - limit) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
        "first": offset + 1 if total else 0,
        "last": min(total, offset + limit),
    }


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "0")
    return int(raw) if raw.isdigit() and len(raw) < 9 else 0


@routes.get("/portal")
@routes.get("/portal/")
async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/portal/catalog")


@routes.get("/portal/static/{name}")
async def static(request: web.Request) -> web.Response:
    """The portal's own script and stylesheet (no third-party asset)."""
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    resource = _STATIC / name
    if "/" in name or suffix not in _STATIC_TYPES or not resource.is_file():
        raise web.HTTPNotFound()
    return web.Response(
        body=resource.read_bytes(),
        content_type=_STATIC_TYPES[suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@routes.get("/portal/catalog")
@portal_page("catalog")
async def catalog_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    wanted = {k: request.query.get(k, "").strip() for k in ("q", "category", "owner", "tag")}
    everything = await api_get(request, "/catalog", limit=200)
    # The filters' choices come from every item; without a filter that is also the answer.
    found = (
        await api_get(request, "/catalog", limit=200, **wanted)
        if any(wanted.values())
        else everything
    )
    items = everything["items"]
    return "catalog.html", {
        "wanted": wanted,
        "items": found["items"],
        "total": found["total"],
        "catalog_version": found["catalog_version"],
        "categories": sorted({i["category"] for i in items}),
        "owners": sorted({i["owner"] for i in items}),
        "tags": sorted({t for i in items for t in i["tags"]}),
    }


@routes.get("/portal/catalog/{item_id}")
@portal_page("catalog")
async def item_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    item_id = request.match_info["item_id"]
    found = await api_get(request, f"/catalog/items/{item_id}")
    versions = await api_get(request, f"/catalog/items/{item_id}/versions")
    return "item.html", {"item": found, "versions": versions["versions"]}


@routes.get("/portal/catalog/{item_id}/request")
@portal_page("catalog")
async def form_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    """The request form; with `?resource_id=`, the form of an update of that resource, filled
    with its current inputs."""
    item_id = request.match_info["item_id"]
    item = await api_get(request, f"/catalog/items/{item_id}")
    resource = None
    resource_id = request.query.get("resource_id", "").strip()
    if resource_id:
        resource = await api_get(request, f"/resources/{resource_id}")
    return "form.html", {
        "item": item,
        "resource": resource,
        "inputs": resource["inputs"] if resource else {},
        "modes": item["modes"]["modes"],
        "mode": item["modes"]["mode"],
    }


@routes.get("/portal/requests")
@portal_page("requests")
async def requests_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    """My requests by default; `scope=all` shows every request I may see (my teams' items')."""
    scope = "all" if request.query.get("scope") == "all" else "mine"
    wanted = {k: request.query.get(k, "").strip() for k in ("status", "item_id")}
    offset = _offset(request)
    found = await api_get(
        request,
        "/requests",
        requester=identity.user if scope == "mine" else None,
        limit=PAGE_SIZE,
        offset=offset,
        **wanted,
    )
    return "requests.html", {
        "scope": scope,
        "wanted": wanted,
        "requests": found["requests"],
        "paging": _pages(found["total"], offset, PAGE_SIZE),
        "statuses": (
            "submitted",
            "awaiting_approval",
            "in_progress",
            "awaiting_manual",
            "completed",
            "failed",
            "aborted",
        ),
    }


@routes.get("/portal/requests/{request_id}")
@portal_page("requests")
async def request_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    request_id = request.match_info["request_id"]
    found = await api_get(request, f"/requests/{request_id}")
    plans: list[dict[str, Any]] = []
    if any(a["type"] == "terraform" for a in found["actions"]):
        try:
            plans = (await api_get(request, f"/requests/{request_id}/plan"))["plans"]
        except PaoError:
            plans = []  # none made yet
    logs = await api_get(request, f"/requests/{request_id}/logs")
    return "request.html", {
        "found": found,
        "plans": plans,
        "entries": logs["entries"],
        "ended": found["status"] in ENDED,
        "jira_url": request.app[SETTINGS].jira_url,
    }


@routes.get("/portal/approvals")
@portal_page("approvals")
async def approvals_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    waiting = (await api_get(request, "/approvals"))["approvals"]
    details = []
    for approval in waiting:
        found = await api_get(request, f"/requests/{approval['request_id']}")
        plans: list[dict[str, Any]] = []
        if approval.get("plan"):
            plans = (await api_get(request, f"/requests/{approval['request_id']}/plan"))["plans"]
        details.append({"approval": approval, "request": found, "plans": plans})
    return "approvals.html", {"waiting": details}


@routes.get("/portal/resources")
@portal_page("resources")
async def resources_page(request: web.Request, identity: Identity) -> tuple[str, dict[str, Any]]:
    """My resources; `scope=team` my teams' items' resources too."""
    scope = "team" if request.query.get("scope") == "team" else "mine"
    offset = _offset(request)
    state = request.query.get("state", "").strip()
    found = await api_get(
        request,
        "/resources",
        owner=identity.user if scope == "mine" else None,
        state=state,
        limit=PAGE_SIZE,
        offset=offset,
    )
    return "resources.html", {
        "scope": scope,
        "state": state,
        "resources": found["resources"],
        "paging": _pages(found["total"], offset, PAGE_SIZE),
    }
