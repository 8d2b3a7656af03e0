"""Outages production brings, ridden out by PAO's services running as separate processes: the
database killed and restarted mid-load, the broker restarted (coming back without its log)
mid-load. Every request completes once, with one JIRA issue, and no service needs a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from conftest import fresh_database
from pao.devstack.broker import EmbeddedBroker
from pao.devstack.postgres import EmbeddedPostgres
from pao.fulfillment.executors import idempotency_label
from pao.fulfillment.jira import JiraClient, JiraError
from pao.shared.database import migrate
from pao.stack.runtime import MIGRATIONS
from support import eventually
from support.processes import ServiceProcesses, call, raw_get, submit_many

pytestmark = pytest.mark.asyncio(loop_scope="session")

LAYOUT = {
    "gateway": ("gateway",),
    "relay": ("relay", "projector"),
    "request": ("request",),
    "fulfillment": ("fulfillment",),
    "notification": ("notification",),
}


def start(processes: ServiceProcesses) -> None:
    for name, services in LAYOUT.items():
        processes.start(name, *services)


async def load_through(
    url: str, outage: asyncio.Task[None], *, before: int, after: int, refusals: list[str]
) -> list[str]:
    """Submit `before` requests, then keep submitting while the outage lasts, then `after` more."""
    ids = await submit_many(url, before, refusals=refusals)
    n = before
    while not outage.done():
        ids += await submit_many(url, 1, refusals=refusals, first=n)
        n += 1
    return ids + await submit_many(url, after, refusals=refusals, first=n)


async def finish_every_ticket(url: str, jira_url: str, ids: list[str], dsn: str) -> None:
    """Each request reaches its JIRA issue; the issue is moved to Done; the request completes.
    Requests are followed eight at a time, as the people working the tickets would."""
    lanes = asyncio.Semaphore(8)
    # A connection each: under load the JIRA server may close an idle kept-alive one just as
    # it is reused.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        jira = JiraClient(jira_url, session=http)

        async def done_in_jira(key: str) -> None:
            """Move the issue to Done; a connection lost on the way is tried again (moving an
            issue already Done does nothing)."""
            for attempt in range(3):
                try:
                    await jira.transition_to(key, "Done")
                    return
                except JiraError as exc:
                    if "cannot reach" not in str(exc) or attempt == 2:
                        raise
                    await asyncio.sleep(0.5)

        async def finish(request_id: str) -> None:
            async def waiting() -> str | None:
                status = await call(url, "GET", f"/requests/{request_id}/status")
                outputs = status["actions"][0]["outputs"]
                return outputs.get("key") if status["status"] == "awaiting_manual" else None

            async def completed() -> bool:
                status = await call(url, "GET", f"/requests/{request_id}/status")
                return status["status"] == "completed"

            async with lanes:
                try:
                    key = await eventually(waiting, timeout=90, interval=0.3, what="a ticket")
                except AssertionError as exc:
                    raise AssertionError(
                        f"{request_id} never reached its ticket: {await log_lines(url, request_id)}"
                    ) from exc
                await done_in_jira(key)
                try:
                    await eventually(completed, timeout=90, interval=0.3, what="completion")
                except AssertionError as exc:
                    raise AssertionError(
                        f"{request_id} never completed: {await log_lines(url, request_id)}; "
                        f"jobs: {await job_rows(dsn, request_id)}"
                    ) from exc

        async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
            for request_id in ids:
                group.create_task(finish(request_id))


async def log_lines(url: str, request_id: str) -> list[str]:
    """The request's log, one line per entry, for a failure's message."""
    logs = await call(url, "GET", f"/requests/{request_id}/logs")
    return [f"{e['event_type']}: {e['message']}" for e in logs["entries"]]


async def job_rows(dsn: str, request_id: str) -> list[dict[str, object]]:
    """The request's fulfilment jobs, for a failure's message."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, kind, state, attempt, worker, due_at, lease_until, last_error, updated_at "
            "FROM fulfillment_jobs WHERE request_id = $1 ORDER BY id",
            request_id,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def every_request_completed_once(dsn: str, jira_url: str, ids: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        completions = await conn.fetch(
            "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'RequestCompleted' "
            "GROUP BY stream_id"
        )
    finally:
        await conn.close()
    assert {r["stream_id"]: r["n"] for r in completions} == {f"request-{i}": 1 for i in ids}
    async with aiohttp.ClientSession() as http:
        for request_id in ids:
            label = idempotency_label(request_id, "create_ticket")
            async with http.get(
                f"{jira_url}/rest/api/2/search", params={"jql": f'labels = "{label}"'}
            ) as answer:
                assert (await answer.json())["total"] == 1, request_id


@pytest_asyncio.fixture(loop_scope="session")
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg" / "data")
    await server.start()
    try:
        await migrate(server.dsn(), MIGRATIONS)
        yield server
    finally:
        await server.stop()


async def test_a_postgresql_outage_is_ridden_out(
    own_postgres: EmbeddedPostgres, own_broker: str, jira_url: str, tmp_path: Path
) -> None:
    dsn = own_postgres.dsn()
    processes = ServiceProcesses.configured(
        tmp_path, database_url=dsn, kafka=own_broker, jira=jira_url
    )
    start(processes)
    try:
        await processes.ready()
        url = processes.gateway_url
        refusals: list[str] = []
        seen_while_away: list[tuple[int, dict[str, str], dict]] = []

        async def outage() -> None:
            await asyncio.sleep(1.0)
            await own_postgres.kill()
            seen_while_away.append(await raw_get(url, "/requests"))
            await asyncio.sleep(3.0)
            await own_postgres.start()

        away = asyncio.create_task(outage())
        ids = await load_through(url, away, before=10, after=10, refusals=refusals)
        await away
        status, headers, body = seen_while_away[0]
        assert status == 503
        assert body["error"]["code"] == "PAO-SYS-002"
        assert headers.get("retry-after")
        assert "503 PAO-SYS-002" in refusals  # submits were refused, then accepted on retry
        await finish_every_ticket(url, jira_url, ids, dsn)
        await every_request_completed_once(dsn, jira_url, ids)
        assert all(processes.alive().values()), processes.alive()
        assert processes.logged("event dead-lettered") == []
    finally:
        await processes.stop_all()


async def test_a_broker_restart_loses_nothing(
    postgres_server: str, jira_url: str, tmp_path: Path
) -> None:
    broker = EmbeddedBroker(tmp_path / "broker")
    await broker.start()
    try:
        async with fresh_database(postgres_server) as dsn:
            processes = ServiceProcesses.configured(
                tmp_path, database_url=dsn, kafka=broker.bootstrap, jira=jira_url
            )
            start(processes)
            try:
                await processes.ready()
                url = processes.gateway_url

                async def restart() -> None:
                    await asyncio.sleep(1.5)
                    await broker.restart()  # in memory: it comes back with no topics at all

                bounced = asyncio.create_task(restart())
                ids = await load_through(url, bounced, before=15, after=15, refusals=[])
                await bounced
                await finish_every_ticket(url, jira_url, ids, dsn)
                await every_request_completed_once(dsn, jira_url, ids)
                assert all(processes.alive().values()), processes.alive()
                assert processes.logged("publishing the whole store again") == ["relay"]

                async def ready() -> bool:
                    status, _, _ = await raw_get(url, "/health/ready")
                    return status == 200

                await eventually(ready, timeout=30, what="readiness with every topic back")
            finally:
                await processes.stop_all()
    finally:
        await broker.stop()
