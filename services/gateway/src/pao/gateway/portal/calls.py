"""The portal reads through the API's own handlers, so it shows exactly what the API would:
a page's call is the browser's request, re-addressed to an API route and answered by that
route's handler with the browser's identity (authorisation included)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from yarl import URL

from pao.contracts import errors
from pao.contracts.errors import PaoError


async def api_get(request: web.Request, path: str, **query: Any) -> Any:
    """The JSON answer of `GET /api/v1{path}?{query}` for the page's caller; PaoError as the
    API would answer it (not found, forbidden, ...)."""
    wanted = URL(f"/api/v1{path}").with_query(
        {k: str(v) for k, v in query.items() if v not in (None, "")}
    )
    inner = request.clone(method="GET", rel_url=wanted)
    match = await request.app.router.resolve(inner)
    if match.http_exception is not None:
        raise PaoError(errors.ROUTE_NOT_FOUND, f"no endpoint at {wanted.path}")
    match.add_app(request.app)
    match.freeze()
    # aiohttp sets the match on the request it dispatches; this request is dispatched here.
    inner._match_info = match
    response = await match.handler(inner)
    if not isinstance(response, web.Response) or response.body is None:
        raise PaoError(errors.INTERNAL, f"{wanted.path} did not answer with a body")
    return json.loads(bytes(response.body))  # type: ignore[arg-type]
