"""Traces as an operator's collector receives them: with OTEL_EXPORTER_OTLP_ENDPOINT set, one
request submitted to the gateway and fulfilled through a JIRA ticket makes one trace, from the
gateway's server span through the request service and fulfilment (across the event store and
Kafka) down to the call that opened the ticket, every span naming the request's correlation id.

The receiver speaks OTLP/HTTP like a collector; the provider is installed in this process for
this module only and shut down after it, so the other tests stay untraced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from test_request_flow import EKS, api, status_becomes
from test_rest_action import KEY, answer, serving

from conftest import REPO, fresh_database
from pao.fulfillment.rest import RestExecutor
from pao.shared import tracing
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.otlp import ReceivedSpan, Receiver, otlp_receiver
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, Receiver]]:
    async with otlp_receiver() as receiver:
        with pytest.MonkeyPatch.context() as env:
            env.delenv("OTEL_SDK_DISABLED", raising=False)
            env.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
            env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
            env.setenv("OTEL_SERVICE_NAME", "pao-traces-test")
            assert tracing.configure("pao", as_global=False)
        try:
            async with fresh_database(postgres_server) as dsn:
                own = settings.model_copy(
                    update={
                        "database_url": dsn,
                        "jira_url": jira_url,
                        "jira_poll_seconds": 0.2,
                        "catalog_dir": REPO / "catalog",
                    }
                )
                async with running_stack(
                    own, keys, services=SERVICES, data_dir=tmp_path_factory.mktemp("traces")
                ) as stack:
                    yield stack, receiver
        finally:
            # The exporter posts from its own thread to the receiver on this loop.
            await asyncio.to_thread(tracing.shutdown)
    assert not tracing.enabled()


def ancestors(span: ReceivedSpan, spans: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """The span and its parents up to the root of its trace, innermost first."""
    chain = [span]
    while chain[-1].parent_span_id:
        chain.append(spans[chain[-1].parent_span_id])
    return chain


async def test_one_trace_follows_a_request_from_the_gateway_to_its_jira_ticket(
    traced: tuple[Stack, Receiver],
) -> None:
    stack, receiver = traced
    answer = await api(
        stack,
        "POST",
        "/requests",
        body={"item_id": "eks-application", "inputs": EKS, "mode": "manual"},
    )
    request_id = answer["request_id"]
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    assert waiting["actions"][0]["outputs"]["key"]  # the ticket exists
    correlation_id = await stack.pool.fetchval(
        "SELECT correlation_id FROM events WHERE stream_id = $1 AND stream_version = 1",
        f"request-{request_id}",
    )
    assert correlation_id

    def ticket_call() -> ReceivedSpan | None:
        return next(
            (
                s
                for s in receiver.spans
                if s.name == "JIRA POST"
                and s.attributes.get("url.full", "").endswith("/rest/api/2/issue")
                and s.attributes.get(tracing.CORRELATION_ID) == correlation_id
            ),
            None,
        )

    async def exported() -> ReceivedSpan | None:
        await asyncio.to_thread(tracing.flush)
        return ticket_call()

    jira = await eventually(exported, timeout=15, what="the JIRA call's span exported")
    spans = receiver.trace(jira.trace_id)
    chain = ancestors(jira, spans)

    action = chain[1]
    assert (action.name, action.kind) == ("action execute", "INTERNAL")
    assert action.attributes["pao.action"] == "manual"
    assert action.attributes["pao.action_type"] == "jira"
    assert action.attributes["pao.request_id"] == request_id

    consumers = [s for s in chain if s.kind == "CONSUMER"]
    groups = [s.attributes["messaging.kafka.consumer.group"] for s in consumers]
    assert groups[0] == "pao-fulfillment"  # the innermost consumer scheduled the action
    assert "pao-request-process" in groups[1:]  # the request service decided to dispatch it
    for consumer in consumers:
        assert consumer.name == f"{consumer.attributes['messaging.destination.name']} process"
        assert consumer.attributes["messaging.system"] == "kafka"
        assert consumer.attributes["pao.event_type"]

    gateway = chain[-1]
    assert (gateway.name, gateway.kind) == ("POST /api/v1/requests", "SERVER")
    assert gateway.attributes["http.request.method"] == "POST"
    assert gateway.attributes["http.route"] == "/api/v1/requests"
    assert gateway.attributes["http.response.status_code"] == 202
    assert gateway.attributes["user"] == "dana"

    assert jira.kind == "CLIENT"
    assert jira.attributes["http.request.method"] == "POST"
    assert jira.attributes["http.response.status_code"] == 201
    assert "?" not in jira.attributes["url.full"]
    assert [s.attributes.get(tracing.CORRELATION_ID) for s in chain] == [correlation_id] * len(
        chain
    )
    assert {s.service for s in chain} == {"pao-traces-test"}  # OTEL_SERVICE_NAME is honoured


async def test_a_callers_trace_continues_through_the_gateway(
    traced: tuple[Stack, Receiver],
) -> None:
    stack, receiver = traced
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await api(
        stack,
        "GET",
        "/requests",
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )

    async def exported() -> list[ReceivedSpan]:
        await asyncio.to_thread(tracing.flush)
        return list(receiver.trace(trace_id).values())

    spans = await eventually(exported, timeout=10, what="the continued trace exported")
    (server,) = spans
    assert server.parent_span_id == parent
    assert server.name == "GET /api/v1/requests"
    assert server.attributes["http.response.status_code"] == 200


async def test_a_rest_action_call_is_a_client_span_and_sends_its_context(
    traced: tuple[Stack, Receiver],
) -> None:
    _, receiver = traced
    async with serving() as service, aiohttp.ClientSession() as http:
        service.script("/deployments", answer(200, {"id": "d-1"}))
        rest = RestExecutor(http, allowed_hosts=("127.0.0.1:*",))
        with tracing.span("action execute", correlation_id="corr-rest") as action:
            done = await rest.run(
                {"method": "GET", "url": f"{service.url}/deployments?token=s3cret"}, KEY
            )
        assert done.outputs["status_code"] == 200
    (seen,) = service.calls("/deployments")
    trace_id = f"{action.get_span_context().trace_id:032x}"
    assert seen.headers["traceparent"].split("-")[1] == trace_id

    async def exported() -> ReceivedSpan | None:
        await asyncio.to_thread(tracing.flush)
        spans = receiver.trace(trace_id).values()
        return next((s for s in spans if s.name == "REST GET"), None)

    call = await eventually(exported, timeout=10, what="the REST call's span exported")
    assert call.kind == "CLIENT"
    assert call.parent_span_id == f"{action.get_span_context().span_id:016x}"
    assert seen.headers["traceparent"].split("-")[2] == call.span_id  # the server's parent
    assert call.attributes["url.full"] == f"{service.url}/deployments"  # no query: no secret
    assert call.attributes["http.response.status_code"] == 200
    assert call.attributes[tracing.CORRELATION_ID] == "corr-rest"
