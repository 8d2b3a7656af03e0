"""HTTP metrics of the gateway, and its Prometheus scrape endpoint `GET /metrics`.

The middleware runs outermost, so it counts the status a caller finally got (the error envelope
included) and answers `/metrics` itself: a scrape target carries no SigV4 signature, and
`/metrics` sits outside `/api/v1` and its authentication.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from pao.shared import metrics

#: Where Prometheus scrapes.
METRICS_PATH = "/metrics"

#: Methods counted by name; anything else is counted as "other" (labels stay bounded).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: web.Request) -> str:
    """The route template that matched (`/api/v1/requests/{request_id}`), never the raw path."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by route template, method and status; serve `/metrics`."""
    method = request.method if request.method in _METHODS else "other"
    if request.path == METRICS_PATH and method in ("GET", "HEAD"):
        route, serve = METRICS_PATH, _exposition
    else:
        route, serve = route_of(request), handler
    started = time.perf_counter()
    status = 500
    try:
        response = await serve(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.HTTP_REQUEST_DURATION.labels(route=route, method=method).observe(
            time.perf_counter() - started
        )
        metrics.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()


async def _exposition(_: web.Request) -> web.StreamResponse:
    return metrics.exposition()
