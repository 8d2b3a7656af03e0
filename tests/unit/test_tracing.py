"""Tracing is off unless an OTLP endpoint is configured, and then costs nothing: no provider is
installed, PAO's tracer is the API's no-op one, and nothing reaches events or outgoing calls."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from pao.shared import tracing


@pytest.fixture
def untraced_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("untraced_environment")
def test_without_an_endpoint_no_provider_is_installed() -> None:
    assert tracing.configure("pao") is False
    assert not tracing.enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert isinstance(tracing.tracer(), trace.NoOpTracer)


@pytest.mark.usefixtures("untraced_environment")
def test_untraced_work_records_nothing_and_sends_no_context() -> None:
    headers = {"Accept": "application/json"}
    with tracing.span("JIRA POST", kind=trace.SpanKind.CLIENT, correlation_id="c-1") as span:
        assert not span.is_recording()
        assert tracing.current_traceparent() is None  # an appended event carries none
        assert tracing.outgoing(headers) is headers
        tracing.correlate("c-1")
        tracing.annotate({"pao.action_type": "jira"})
    assert tracing.flush()


def test_an_endpoint_asks_for_traces_unless_the_sdk_is_disabled() -> None:
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not tracing.wanted({})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    )


def test_a_stored_traceparent_is_continued() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = tracing.context_of(traceparent)
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert parent.is_remote
    assert tracing.context_of(None) is None


def test_urls_in_spans_lose_credentials_and_queries() -> None:
    shown = tracing.shown_url("https://pao:s3cret@jira.example.com:8443/rest/api/2/search?jql=x#f")
    assert shown == "https://jira.example.com:8443/rest/api/2/search"
