"""OpenTelemetry traces, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off by default, and then free: no provider is installed, `enabled()` is False, and the places
that trace (the gateway's middleware, the consumers, the store's append, the fulfilment worker)
check it before doing anything, so an untraced process allocates no span and reads no context.

The trace crosses the event store and Kafka: an event appended while a span is active keeps that
span's W3C `traceparent`; the relay sends it as a Kafka record header, and a consumer runs the
event's handler in a span that continues it. What the handler appends carries the handler's own
context, so one trace follows a request from the gateway through every service it reaches.

The exporter reads the standard variables itself (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ...), the resource
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, and the batch processor OTEL_BSP_*.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

#: The name PAO's spans are recorded under (the instrumentation scope).
SCOPE = "pao"

#: The attribute every PAO span carries the request's correlation id in.
CORRELATION_ID = "pao.correlation_id"

_W3C = TraceContextTextMapPropagator()

#: The correlation id of the innermost PAO span, for the spans opened inside it.
_correlation: ContextVar[str | None] = ContextVar("pao_trace_correlation", default=None)

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (an OTLP endpoint, and the SDK not disabled)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure(service_name: str, *, as_global: bool = True) -> bool:
    """Install a tracer provider exporting over OTLP/HTTP, if the environment asks for traces;
    True when it did. `as_global` also makes it the API's global provider (once per process)."""
    global _provider, _tracer
    if _provider is not None or not wanted():
        return _provider is not None
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if as_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)
    return True


def flush(timeout_millis: int = 10_000) -> bool:
    """Export every finished span now; True when all went out (or nothing is traced)."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def shutdown() -> None:
    """Flush what is left and stop tracing in this process."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    """Whether this process records spans."""
    return _provider is not None


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span (nothing when nothing is traced)."""
    if _provider is not None:
        trace.get_current_span().set_attributes(_clean(attributes) or {})


def tracer() -> trace.Tracer:
    """PAO's tracer: the configured provider's, or the API's no-op one."""
    return _tracer


def inject(carrier: MutableMapping[str, str]) -> None:
    """Add the current span's `traceparent` (and `tracestate`) to outgoing headers."""
    if _provider is not None:
        _W3C.inject(carrier)


def outgoing(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The headers of an outgoing HTTP call, with the current trace context when traced."""
    if _provider is None:
        return headers
    carrier = dict(headers)
    _W3C.inject(carrier)
    return carrier


def shown_url(url: str) -> str:
    """A URL fit for a span: no credentials, query or fragment (they may carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    """The context an incoming `traceparent` / `tracestate` continues (empty when absent)."""
    return _W3C.extract(carrier)


def current_traceparent() -> str | None:
    """The active span's W3C `traceparent`, None when nothing is traced."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a stored `traceparent` continues; None when there is none."""
    return _W3C.extract({"traceparent": traceparent}) if traceparent else None


@contextmanager
def span(
    name: str,
    *,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
    correlation_id: str | None = None,
) -> Iterator[trace.Span]:
    """A span made current for the block; exceptions are recorded and mark it as an error.

    The span and every span opened inside it carry the correlation id (given here, or by the
    enclosing span, or later through `correlate`). Nothing happens when nothing is traced.
    """
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    correlation_id = correlation_id or _correlation.get()
    shown = _clean(attributes) or {}
    if correlation_id:
        shown[CORRELATION_ID] = correlation_id
    token = _correlation.set(correlation_id)
    try:
        with _tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=shown
        ) as current:
            yield current
    finally:
        _correlation.reset(token)


def correlate(correlation_id: str | None) -> None:
    """Name the correlation id of the current span once it is known, for it and what follows
    inside it."""
    if _provider is None or not correlation_id:
        return
    trace.get_current_span().set_attribute(CORRELATION_ID, correlation_id)
    _correlation.set(correlation_id)  # undone when the enclosing `span` block ends


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The attributes without their None values (which OpenTelemetry refuses)."""
    if not attributes:
        return None
    return {key: value for key, value in attributes.items() if value is not None}
