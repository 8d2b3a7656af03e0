"""Prometheus metrics as an operator scrapes them: a running stack does real work (a request
fulfilled through a JIRA ticket, a refused call, an unknown path), and `GET /metrics` on the
gateway shows the counters moved by that work, labelled by route template; a process without
the gateway serves the same registry on PAO_METRICS_PORT."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from test_request_flow import EKS, api, status_becomes

from conftest import REPO, fresh_database
from pao.devctl.errors import CliError
from pao.devstack.broker import EmbeddedBroker
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")

#: Every family PAO exports: its type and the labels of its samples.
FAMILIES = {
    "pao_http_requests": ("counter", {"route", "method", "status"}),
    "pao_http_request_duration_seconds": ("histogram", {"route", "method"}),
    "pao_requests_submitted": ("counter", {"item"}),
    "pao_requests_finished": ("counter", {"item", "status"}),
    "pao_request_duration_seconds": ("histogram", {"item", "mode", "status"}),
    "pao_action_runs": ("counter", {"type", "outcome"}),
    "pao_action_duration_seconds": ("histogram", {"type", "outcome"}),
    "pao_action_attempts": ("counter", {"type"}),
    "pao_fallbacks": ("counter", {"item"}),
    "pao_relay_published_events": ("counter", set()),
    "pao_relay_lag_events": ("gauge", set()),
    "pao_relay_lag_seconds": ("gauge", set()),
    "pao_consumer_lag_events": ("gauge", {"group", "topic", "partition"}),
    "pao_consumer_handled": ("counter", {"group", "topic"}),
    "pao_consumer_dead_lettered": ("counter", {"group", "topic"}),
    "pao_jobs_due": ("gauge", set()),
    "pao_jobs_oldest_due_age_seconds": ("gauge", set()),
    "pao_breaker_state": ("gauge", {"system"}),
    "pao_jira_poll_duration_seconds": ("histogram", set()),
    "pao_jira_watched_issues": ("gauge", set()),
    "pao_notification_outbox_depth": ("gauge", set()),
    "pao_notification_send_failures": ("counter", {"channel"}),
    "pao_eventstore_append_duration_seconds": ("histogram", set()),
    "pao_eventstore_append_conflicts": ("counter", set()),
    "pao_build_info": ("gauge", {"version"}),
}
#: Histograms' own labels besides the metric's.
_BUCKET = {"le"}


class Scrape:
    """One scrape of /metrics, parsed."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str) -> list[Sample]:
        return [s for f in self.families.values() for s in f.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when it is not there yet (a counter not yet moved)."""
        return sum(
            s.value
            for s in self.samples(name)
            if all(s.labels.get(k) == v for k, v in labels.items())
        )


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200
        assert answer.content_type == "text/plain"
        return Scrape(await answer.text())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    # A broker of its own: on the session's, the consumers would first replay the requests
    # other tests made, and count them.
    broker = EmbeddedBroker(tmp_path_factory.mktemp("metrics-broker"))
    await broker.start()
    try:
        async with fresh_database(postgres_server) as dsn:
            own = settings.model_copy(
                update={
                    "database_url": dsn,
                    "kafka_bootstrap": broker.bootstrap,
                    "jira_url": jira_url,
                    "jira_poll_seconds": 0.2,
                    "catalog_dir": REPO / "catalog",
                }
            )
            async with running_stack(
                own, keys, services=SERVICES, data_dir=tmp_path_factory.mktemp("metrics")
            ) as running:
                yield running
    finally:
        await broker.stop()


async def test_the_gateway_exposes_what_a_fulfilled_request_did(
    stack: Stack, jira_url: str
) -> None:
    before = await scrape(f"{stack.url}/metrics")
    answer = await api(
        stack,
        "POST",
        "/requests",
        body={"item_id": "eks-application", "inputs": EKS, "mode": "manual"},
    )
    request_id = answer["request_id"]
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    async with aiohttp.ClientSession() as http:
        await JiraClient(jira_url, session=http).transition_to(
            waiting["actions"][0]["outputs"]["key"], "Done"
        )
        await status_becomes(stack, request_id, "completed")
        async with http.get(f"{stack.url}/api/v1/requests") as refused:
            assert refused.status == 401  # unsigned
    with pytest.raises(CliError) as unknown:  # signed, so refused as unknown, not as unsigned
        await api(stack, "GET", f"/no-such-thing/{request_id}")
    assert unknown.value.status == 404

    async def finished() -> Scrape | None:
        now = await scrape(f"{stack.url}/metrics")
        labels = {"item": "eks-application", "status": "completed"}
        done = now.value("pao_requests_finished_total", **labels)
        # Counters are the process's: earlier tests in this process counted their requests too.
        return now if done > before.value("pao_requests_finished_total", **labels) else None

    after = await eventually(finished, timeout=15, what="the request counted as finished")

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    submits = {"route": "/api/v1/requests", "method": "POST", "status": "202"}
    assert moved("pao_http_requests_total", **submits) == 1
    assert (
        moved("pao_http_requests_total", route="/api/v1/requests", method="GET", status="401") == 1
    )
    assert moved("pao_http_requests_total", route="unmatched", method="GET", status="404") == 1
    status_route = "/api/v1/requests/{request_id}/status"
    assert moved("pao_http_requests_total", route=status_route, method="GET", status="200") >= 2
    assert (
        moved("pao_http_request_duration_seconds_count", route="/api/v1/requests", method="POST")
        == 1
    )
    routes = {s.labels["route"] for s in after.samples("pao_http_requests_total")}
    assert not any(request_id in route for route in routes)  # templates, never raw paths

    assert moved("pao_requests_submitted_total", item="eks-application") == 1
    assert moved("pao_requests_finished_total", item="eks-application", status="completed") == 1
    took = {"item": "eks-application", "mode": "manual", "status": "completed"}
    assert moved("pao_request_duration_seconds_count", **took) == 1
    # One run; its attempts are one, or more where JIRA answered slowly and the step ran again.
    assert moved("pao_action_attempts_total", type="jira") >= 1
    assert moved("pao_action_runs_total", type="jira", outcome="succeeded") == 1
    assert moved("pao_action_duration_seconds_count", type="jira", outcome="succeeded") == 1
    assert moved("pao_jira_poll_duration_seconds_count") >= 1
    assert moved("pao_relay_published_events_total") >= 5
    assert moved("pao_eventstore_append_duration_seconds_count") >= 5
    assert after.value("pao_breaker_state", system="jira") == 0
    handled = after.value("pao_consumer_handled_total", group="pao-request-process")
    assert handled > before.value("pao_consumer_handled_total", group="pao-request-process")
    lags = after.samples("pao_consumer_lag_events")
    assert {s.labels["group"] for s in lags} >= {"pao-request-process", "pao-fulfillment"}
    assert all(s.value >= 0 for s in lags)
    assert after.value("pao_build_info") == 1

    for name, (kind, labels) in FAMILIES.items():
        family = after.families.get(name)
        assert family is not None, f"{name} is not exported"
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - _BUCKET == labels, (name, sample.labels)


async def test_metrics_need_no_signature_and_are_outside_the_api(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/metrics") as answer:
            assert answer.status == 200
            assert "# TYPE pao_build_info gauge" in await answer.text()
        async with http.get(f"{stack.url}/api/v1/metrics") as under_the_api:
            assert under_the_api.status == 401  # not a public path: nothing is served there


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_process_without_the_gateway_serves_metrics_on_its_port(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = free_port()
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(update={"database_url": dsn, "metrics_port": port})
        async with running_stack(
            own, keys, services=("relay",), data_dir=tmp_path_factory.mktemp("relay")
        ):
            url = f"http://127.0.0.1:{port}/metrics"

            async def caught_up() -> Scrape | None:
                now = await scrape(url)
                lag = now.value("pao_relay_lag_events") + now.value("pao_relay_lag_seconds")
                return now if lag == 0 else None

            # A fresh store, all published: both lag gauges read 0.
            served = await eventually(caught_up, timeout=12, what="the relay's lag sampled")
            assert served.families["pao_relay_published_events"].type == "counter"
            assert served.value("pao_build_info") == 1
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(url)  # stopped with the process
