"""Every Prometheus metric a PAO process exports, defined once, and the ways to expose them.

All metrics live in prometheus-client's default registry, so one process running several
services (`pao up`) exposes them together on the gateway's `/metrics`; a process without the
gateway serves them on `PAO_METRICS_PORT`. Labels take values from bounded sets only (route
templates, catalog item ids, action types, consumer groups and partitions, system names).

Gauges that need a query are refreshed by a sampler task (`sample_every`) running one cheap,
indexed query every few seconds, not on every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from pao.shared.lifecycle import pause

log = structlog.get_logger(__name__)

#: Seconds between two refreshes of the query-backed gauges.
SAMPLE_SECONDS = 5.0

#: Buckets for work that takes from milliseconds (an HTTP call) to minutes.
_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets for work that takes from seconds to days (a request waiting on a person).
_SLOW = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0, 604800.0)

HTTP_REQUESTS = Counter(
    "pao_http_requests_total",
    "HTTP requests the gateway answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "pao_http_request_duration_seconds",
    "Time the gateway took to answer, by route template and method.",
    ["route", "method"],
    buckets=_FAST,
)

REQUESTS_SUBMITTED = Counter(
    "pao_requests_submitted_total", "Requests submitted, by catalog item.", ["item"]
)
REQUESTS_FINISHED = Counter(
    "pao_requests_finished_total",
    "Requests that reached a terminal status (completed, failed, aborted), by catalog item.",
    ["item", "status"],
)
REQUEST_DURATION = Histogram(
    "pao_request_duration_seconds",
    "Time from a request's submission to its terminal status.",
    ["item", "mode", "status"],
    buckets=_SLOW,
)

ACTION_RUNS = Counter(
    "pao_action_runs_total",
    "Action runs that ended (succeeded, failed, skipped), by action type.",
    ["type", "outcome"],
)
ACTION_DURATION = Histogram(
    "pao_action_duration_seconds",
    "Time from when an action's job was queued to its outcome, by action type.",
    ["type", "outcome"],
    buckets=_SLOW,
)
ACTION_ATTEMPTS = Counter(
    "pao_action_attempts_total", "Attempts started at running an action, by type.", ["type"]
)
FALLBACKS = Counter(
    "pao_fallbacks_total",
    "Manual fallbacks started in place of a failed automated action, by catalog item.",
    ["item"],
)

RELAY_PUBLISHED = Counter(
    "pao_relay_published_events_total", "Events the relay published to Kafka."
)
RELAY_LAG_EVENTS = Gauge(
    "pao_relay_lag_events", "The store's head position minus the relay's published position."
)
RELAY_LAG_SECONDS = Gauge(
    "pao_relay_lag_seconds", "Age of the oldest event not yet published; 0 when none."
)

CONSUMER_LAG = Gauge(
    "pao_consumer_lag_events",
    "Records on a partition past what its consumer group handled (high watermark minus offset).",
    ["group", "topic", "partition"],
)
CONSUMER_HANDLED = Counter(
    "pao_consumer_handled_total", "Events a consumer group applied.", ["group", "topic"]
)
CONSUMER_DEAD_LETTERED = Counter(
    "pao_consumer_dead_lettered_total",
    "Events a consumer group sent to the dead-letter topic.",
    ["group", "topic"],
)

JOBS_DUE = Gauge("pao_jobs_due", "Fulfilment jobs due now and not yet claimed.")
JOBS_OLDEST_DUE_AGE = Gauge(
    "pao_jobs_oldest_due_age_seconds", "How long the oldest due fulfilment job has waited."
)
BREAKER_STATE = Gauge(
    "pao_breaker_state",
    "Circuit breaker state of an external system: 0 closed, 1 half-open, 2 open.",
    ["system"],
)

JIRA_POLL_DURATION = Histogram(
    "pao_jira_poll_duration_seconds", "Time one read of a watched JIRA issue took.", buckets=_FAST
)
JIRA_WATCHED_ISSUES = Gauge("pao_jira_watched_issues", "JIRA issues fulfilment is polling.")

NOTIFICATION_OUTBOX_DEPTH = Gauge(
    "pao_notification_outbox_depth", "Notices waiting in the outbox (pending or being sent)."
)
NOTIFICATION_SEND_FAILURES = Counter(
    "pao_notification_send_failures_total", "Failed attempts at sending a notice.", ["channel"]
)

EVENTSTORE_APPEND_DURATION = Histogram(
    "pao_eventstore_append_duration_seconds", "Time one append to the event store took.",
    buckets=_FAST,
)  # fmt: skip
EVENTSTORE_APPEND_CONFLICTS = Counter(
    "pao_eventstore_append_conflicts_total",
    "Appends refused because the stream had moved on (optimistic concurrency).",
)

BUILD_INFO = Gauge("pao_build_info", "The running PAO version (always 1).", ["version"])


def _pao_version() -> str:
    try:
        return version("pao-shared")
    except PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(version=_pao_version()).set(1)

#: purgatory's breaker states, as the gauge's numbers.
BREAKER_STATES = {"closed": 0, "half-opened": 1, "opened": 2}


def exposition() -> web.Response:
    """The registry in Prometheus text format."""
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def _serve(_: web.Request) -> web.Response:
    return exposition()


async def start_metrics_server(host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics on `host:port` (a process without the gateway); returns its runner."""
    app = web.Application()
    app.router.add_get("/metrics", _serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


async def sample_every(
    stop: asyncio.Event, sample: Callable[[], Awaitable[None]], seconds: float = SAMPLE_SECONDS
) -> None:
    """Refresh query-backed gauges until `stop`; a failed sample waits for the next one."""
    while True:
        try:
            await sample()
        except Exception as exc:  # noqa: BLE001 - a gauge left stale is no reason to stop
            log.warning("metrics sample failed", sampler=sample.__qualname__, error=str(exc))
        if await pause(stop, seconds):
            return
