"""`GET /api/v1/requests/{request_id}/history`: every event of a request and what it changed."""

from __future__ import annotations

from aiohttp import web

from pao.contracts.history import HistoryPage
from pao.gateway.params import int_param
from pao.gateway.requests import _visible, aware_time_param
from pao.gateway.resources import STORE
from pao.request.history import events_until, history_of

routes = web.RouteTableDef()


@routes.get("/api/v1/requests/{request_id}/history")
async def get_history(request: web.Request) -> web.Response:
    """The request's events, oldest first (up to `as_of`): who, when, what, what changed."""
    as_of = aware_time_param(request, "as_of")
    limit = int_param(request, "limit", 100, low=1, high=500)
    offset = int_param(request, "offset", 0, low=0, high=1_000_000)
    request_id = (await _visible(request))["request_id"]
    envelopes = await events_until(request.app[STORE], request_id, as_of)
    entries = history_of(request_id, envelopes)
    page = HistoryPage(
        request_id=request_id,
        as_of=as_of,
        total=len(entries),
        limit=limit,
        offset=offset,
        entries=entries[offset : offset + limit],
    )
    return web.json_response(page.model_dump(mode="json"))
