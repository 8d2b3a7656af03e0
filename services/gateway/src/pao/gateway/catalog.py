"""Phase 2 routes: browse the catalog, read an item and its form schema, refresh, switch an
item's fulfilment mode."""

from __future__ import annotations

from aiohttp import web

from pao.catalog.history import at_version, published_versions
from pao.catalog.modes import switch_mode
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import SourceError
from pao.contracts import errors
from pao.contracts.catalog import (
    CatalogPage,
    ItemVersion,
    ItemVersionDefinition,
    ItemVersions,
    ModeSwitchBody,
    RefreshResult,
)
from pao.contracts.commands import SwitchItemMode
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway import caching
from pao.gateway.authz import require_admin_or_owner, require_platform_role
from pao.gateway.bodies import read_model
from pao.gateway.params import int_param, text_param
from pao.gateway.resources import CATALOG, CORRELATION_ID, IDENTITY, STORE

routes = web.RouteTableDef()


def _item(request: web.Request) -> dict:
    item_id = request.match_info["item_id"]
    item = request.app[CATALOG].view.items.get(item_id)
    if item is None:
        raise PaoError(
            errors.ITEM_NOT_FOUND,
            f"no catalog item '{item_id}'",
            details=[ErrorDetail(field="item_id", message=item_id)],
        )
    return item


def _catalog_tag(request: web.Request, answer: str, *parts: object) -> str:
    """The tag of an answer built from this gateway's catalog view: its catalog version and
    stream version (a mode switch changes an item without a new catalog version) and `parts`."""
    view = request.app[CATALOG].view
    return caching.tag(answer, view.stream_version, caching.digest(view.version, *parts))


@routes.get("/api/v1/catalog")
async def list_catalog(request: web.Request) -> web.Response:
    """Items filtered by category, owner, tag and free text, a page at a time."""
    limit = int_param(request, "limit", 50, low=1, high=200)
    offset = int_param(request, "offset", 0, low=0, high=1_000_000)
    view = request.app[CATALOG].view
    filters = {name: text_param(request, name) for name in ("category", "owner", "tag", "q")}
    current = _catalog_tag(request, "catalog", *filters.values(), limit, offset)
    if caching.matches(request, current):
        return caching.not_modified(current)

    def page() -> bytes:
        found = view.search(
            category=filters["category"],
            owner=filters["owner"],
            tag=filters["tag"],
            text=filters["q"],
        )
        return (
            CatalogPage(
                catalog_version=view.version,
                total=len(found),
                limit=limit,
                offset=offset,
                items=found[offset : offset + limit],
            )
            .model_dump_json()
            .encode()
        )

    # The catalog changes rarely and is read constantly: each answer is built once per version.
    body = view.memo(("list", *filters.values(), limit, offset), page)
    return caching.tagged(web.Response(body=body, content_type="application/json"), current)


@routes.get("/api/v1/catalog/items/{item_id}")
async def get_item(request: web.Request) -> web.Response:
    """One item's whole definition, and the fulfilment mode new requests of it run in."""
    item = _item(request)
    current = _catalog_tag(request, "item", item["metadata"]["id"])
    if caching.matches(request, current):
        return caching.not_modified(current)
    view = request.app[CATALOG].view
    modes = view.mode_state(item["metadata"]["id"]).model_dump(mode="json", exclude={"changed"})
    body = {"catalog_version": view.version, "item": item, "modes": modes}
    return caching.tagged(web.json_response(body), current)


@routes.get("/api/v1/catalog/items/{item_id}/versions")
async def list_item_versions(request: web.Request) -> web.Response:
    """Every definition of the item the catalog published, oldest first."""
    item_id = request.match_info["item_id"]
    versions = await published_versions(request.app[STORE], item_id)
    if not versions:
        _item(request)  # an item never published: 404
    answer = ItemVersions(
        item_id=item_id,
        versions=[
            ItemVersion(version=v.version, item_hash=v.item_hash, published_at=v.published_at)
            for v in versions
        ],
    )
    return web.json_response(answer.model_dump(mode="json"))


@routes.get("/api/v1/catalog/items/{item_id}/versions/{version}")
async def get_item_version(request: web.Request) -> web.Response:
    """The item as the catalog last published it with that version."""
    item_id, version = request.match_info["item_id"], request.match_info["version"]
    versions = await published_versions(request.app[STORE], item_id)
    found = at_version(versions, version)
    if found is None:
        known = ", ".join(dict.fromkeys(v.version for v in versions)) or "none"
        raise PaoError(
            errors.ITEM_NOT_FOUND,
            f"the catalog never published version {version} of '{item_id}' (published: {known})",
            details=[ErrorDetail(field="version", message=version)],
        )
    answer = ItemVersionDefinition(
        item_id=item_id,
        version=found.version,
        item_hash=found.item_hash,
        published_at=found.published_at,
        item=found.item,
    )
    return web.json_response(answer.model_dump(mode="json"))


@routes.post("/api/v1/catalog/items/{item_id}/mode")
async def switch_item_mode(request: web.Request) -> web.Response:
    """Run new requests of the item in another of its modes (admins and the owning team);
    requests already made keep theirs."""
    body = await read_model(request, ModeSwitchBody)
    identity = request[IDENTITY]
    parts = request.app[CATALOG]
    state = await switch_mode(
        SwitchItemMode(
            item_id=request.match_info["item_id"],
            mode=body.mode,
            reason=body.reason,
            by=identity.user,
        ),
        store=parts.store,
        view=parts.view,
        authorize=lambda owner: require_admin_or_owner(
            identity, owner, "switch the fulfilment mode of this item"
        ),
        correlation_id=request[CORRELATION_ID],
    )
    return web.json_response(state.model_dump(mode="json"))


@routes.get("/api/v1/catalog/items/{item_id}/schema")
async def get_item_schema(request: web.Request) -> web.Response:
    """The item's form as a JSON Schema (2020-12), for form builders and validators."""
    item = _item(request)
    current = _catalog_tag(request, "schema", item["metadata"]["id"])
    if caching.matches(request, current):
        return caching.not_modified(current)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": item["metadata"]["name"],
        "description": item["metadata"]["description"],
        **item["form"]["schema"],
    }
    return caching.tagged(web.json_response(schema), current)


@routes.post("/api/v1/catalog/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Reload the catalog from its source; 422 with every problem if it is not valid."""
    identity = request[IDENTITY]
    require_platform_role(identity, "refresh the catalog")
    result = await run_refresh(request, actor=identity.user)
    return web.json_response(result.model_dump(mode="json"))


async def run_refresh(request: web.Request, *, actor: str) -> RefreshResult:
    """Refresh and map failures to the error envelope."""
    parts = request.app[CATALOG]
    try:
        result = await refresh_catalog(
            source=parts.source,
            store=parts.store,
            view=parts.view,
            actor=actor,
            correlation_id=request[CORRELATION_ID],
        )
    except SourceError as exc:
        raise PaoError(
            errors.CATALOG_SOURCE_UNAVAILABLE,
            str(exc),
            details=[ErrorDetail(field="source", message=str(exc))],
        ) from exc
    if result.status == "failed":
        raise PaoError(
            errors.CATALOG_INVALID,
            f"{len(result.problems)} problem(s) in {result.source}; still serving version "
            f"{result.catalog_version}",
            details=[
                ErrorDetail(
                    field=f"{p.file}#{p.pointer}" if p.pointer else p.file,
                    message=p.message,
                    line=p.line,
                    column=p.column,
                )
                for p in result.problems
            ],
        )
    return result
