"""A server span per gateway request, continuing the caller's trace (W3C `traceparent`).

The middleware sits outside the error envelope, so it sees the status the caller finally got,
and the span is current while the handler runs: the events a command appends carry its context
on into the store, Kafka and the services that follow them.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind, Status, StatusCode

from pao.gateway.metrics import route_of
from pao.gateway.resources import CORRELATION_ID, IDENTITY
from pao.shared import tracing
from pao.shared.keystore import Identity


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the request inside a server span named after its method and route template."""
    if not tracing.enabled():
        return await handler(request)
    route = route_of(request)
    name = request.method if route == "unmatched" else f"{request.method} {route}"
    attributes = {
        "http.request.method": request.method,
        "http.route": None if route == "unmatched" else route,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "user_agent.original": request.headers.get("User-Agent"),
    }
    with tracing.span(
        name, kind=SpanKind.SERVER, parent=tracing.extract(request.headers), attributes=attributes
    ) as span:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if correlation_id := request.get(CORRELATION_ID):
                span.set_attribute(tracing.CORRELATION_ID, correlation_id)
            identity: Identity | None = request.get(IDENTITY)
            if identity is not None:
                span.set_attribute("user", identity.user)
