"""Faults: the fulfilment worker killed mid-action, and JIRA gone for longer than a breaker window.
Nothing acknowledged is lost and no ticket is opened twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from test_request_flow import POSTGRES, api, status_becomes, submit

from conftest import BIN, REPO, fresh_database
from pao.fulfillment import definitions, intake, jobs, ledger, steps
from pao.fulfillment.bootstrap import parts_from_settings
from pao.fulfillment.definitions import Definitions
from pao.fulfillment.executors import idempotency_label
from pao.fulfillment.jira import JiraClient
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyStore
from pao.shared.runtime import Scope
from pao.shared.settings import Settings
from support import eventually
from support.netproxy import TcpProxy
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def issues_labelled(jira_url: str, label: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{jira_url}/rest/api/2/search", params={"jql": f'labels = "{label}"'}
        ) as response,
    ):
        return int((await response.json())["total"])


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(jira_url: str) -> AsyncIterator[TcpProxy]:
    host, port = jira_url.removeprefix("http://").split(":")
    relay = TcpProxy(host, int(port))
    await relay.up()
    yield relay
    await relay.down()


async def start_fulfillment(
    settings: Settings, jira: str, data_dir: Path
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PAO_DATABASE_URL": settings.database_url or "",
        "PAO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_JIRA_URL": jira,
        "PAO_JIRA_POLL_SECONDS": "0.2",
        "PAO_CATALOG_DIR": str(REPO / "catalog"),
        "PAO_DATA_DIR": str(data_dir),
        "PAO_LOG_FORMAT": "json",
        "PAO_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "PAO_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "PAO_FULFILLMENT_LEASE_SECONDS": "3",
    }
    return await asyncio.create_subprocess_exec(
        str(BIN / "pao"),
        "serve",
        "fulfillment",
        env=env,
        stdout=(data_dir / "fulfillment.log").open("ab"),
        stderr=asyncio.subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def stack_without_a_worker(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    broker: str,
    tmp: Path,
) -> AsyncIterator[tuple[Settings, Stack]]:
    """Every service but fulfilment, in this process, on a database and a broker of its own;
    the test runs (and kills) the worker as a process of its own."""
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "kafka_bootstrap": broker,
                "jira_url": jira_url,
                "catalog_dir": REPO / "catalog",
            }
        )
        async with running_stack(
            own, keys, services=("gateway", "relay", "projector", "request"), data_dir=tmp
        ) as stack:
            yield own, stack


async def a_new_worker_finishes_it(
    own: Settings, stack: Stack, proxy: TcpProxy, jira_url: str, request_id: str, tmp: Path
) -> None:
    """A worker started after the killed one finds the one ticket, follows it to Done, and the
    request completes."""
    worker = await start_fulfillment(own, proxy.url, tmp)
    try:
        waiting = await status_becomes(stack, request_id, "awaiting_manual")
        assert await issues_labelled(jira_url, idempotency_label(request_id, "create_ticket")) == 1
        async with aiohttp.ClientSession() as http:
            await JiraClient(jira_url, session=http).transition_to(
                waiting["actions"][0]["outputs"]["key"], "Done"
            )
        await status_becomes(stack, request_id, "completed")
    finally:
        worker.terminate()
        await worker.wait()


async def test_a_worker_killed_after_opening_a_ticket_resumes_without_a_second_one(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    proxy: TcpProxy,
    tmp_path: Path,
    own_broker: str,
) -> None:
    async with stack_without_a_worker(
        postgres_server, settings, keys, jira_url, own_broker, tmp_path
    ) as (own, stack):
        proxy.answer_delay = 3.0  # JIRA does the work at once but its answers arrive late
        worker = await start_fulfillment(own, proxy.url, tmp_path)
        try:
            request_id = await submit(stack, "postgresql-rds", POSTGRES)
            label = idempotency_label(request_id, "create_ticket")

            async def opened() -> bool:
                return await issues_labelled(jira_url, label) == 1

            await eventually(opened, timeout=30, what="the worker to open the ticket")
            # The worker has not recorded the ticket (its answer is still on the way). The read
            # model may not even show the action started yet: it follows the store by a moment.
            state = await api(stack, "GET", f"/requests/{request_id}/status")
            action = state["actions"][0]
            assert action["status"] in ("pending", "running"), action
            assert "key" not in (action.get("outputs") or {})
        finally:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        proxy.answer_delay = 0.0
        await a_new_worker_finishes_it(own, stack, proxy, jira_url, request_id, tmp_path)


async def test_requests_wait_out_a_jira_outage_and_finish_once_it_is_back(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    proxy: TcpProxy,
    tmp_path: Path,
    own_broker: str,
) -> None:
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "kafka_bootstrap": own_broker,
                "jira_url": proxy.url,
                "catalog_dir": REPO / "catalog",
                "jira_poll_seconds": 0.2,
                "breaker_threshold": 2,
                "breaker_seconds": 1.0,
            }
        )
        async with running_stack(
            own,
            keys,
            services=("gateway", "relay", "projector", "request", "fulfillment"),
            data_dir=tmp_path,
        ) as stack:
            await proxy.down()
            ids = [
                await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": f"db{n}"})
                for n in range(4)
            ]

            async def parked() -> bool:
                return bool(
                    await stack.pool.fetchval(
                        "SELECT count(*) FROM fulfillment_jobs "
                        "WHERE last_error LIKE '%breaker open%'"
                    )
                )

            await eventually(parked, timeout=30, what="work to be parked by the breaker")
            await asyncio.sleep(3.0)  # stay down for several breaker windows
            for request_id in ids:
                current = await api(stack, "GET", f"/requests/{request_id}/status")
                assert current["status"] in ("submitted", "in_progress"), current
            await proxy.up()
            keys_opened: list[str] = []
            for request_id in ids:
                waiting = await status_becomes(stack, request_id, "awaiting_manual")
                keys_opened.append(waiting["actions"][0]["outputs"]["key"])
                assert (
                    await issues_labelled(jira_url, idempotency_label(request_id, "create_ticket"))
                    == 1
                )
            assert len(set(keys_opened)) == len(ids)
            async with aiohttp.ClientSession() as http:
                client = JiraClient(jira_url, session=http)
                for key in keys_opened:
                    await client.transition_to(key, "Done")
            for request_id in ids:
                await status_becomes(stack, request_id, "completed")


async def test_a_worker_killed_inside_the_step_that_records_a_ticket_leaves_nothing_stuck(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    proxy: TcpProxy,
    tmp_path: Path,
    own_broker: str,
) -> None:
    """The worker is frozen inside the step that records the ticket, after the ticket's report
    is written and before its poll job is: a lock on the job table holds it there. Killed at that
    instant, it leaves nothing half done; the next worker finds the ticket and follows it."""
    async with stack_without_a_worker(
        postgres_server, settings, keys, jira_url, own_broker, tmp_path
    ) as (own, stack):
        proxy.answer_delay = 2.0  # time to take the lock while the answer is on its way
        worker = await start_fulfillment(own, proxy.url, tmp_path)
        blocker = await asyncpg.connect(own.database_url)
        try:
            request_id = await submit(stack, "postgresql-rds", POSTGRES)
            label = idempotency_label(request_id, "create_ticket")

            async def opened() -> bool:
                return await issues_labelled(jira_url, label) == 1

            await eventually(opened, timeout=30, what="the worker to open the ticket")
            locking = blocker.transaction()
            await locking.start()
            await blocker.execute("LOCK TABLE fulfillment_jobs IN SHARE MODE")

            async def frozen_mid_step() -> bool:
                return bool(
                    await stack.pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() "
                        "AND application_name LIKE 'pao-fulfillment%' "
                        "AND query LIKE '%INSERT INTO fulfillment_jobs%'"
                    )
                )

            await eventually(frozen_mid_step, timeout=30, what="the worker to reach the poll")
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            await locking.rollback()
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
            await blocker.close()
        state = await status_becomes(stack, request_id, "in_progress")
        assert state["actions"][0]["status"] == "running"  # the ticket's report never committed
        proxy.answer_delay = 0.0
        await a_new_worker_finishes_it(own, stack, proxy, jira_url, request_id, tmp_path)
        completions = await stack.pool.fetchval(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'RequestCompleted'",
            f"request-{request_id}",
        )
        assert completions == 1
        assert await issues_labelled(jira_url, label) == 1


class HeldDefinitions(Definitions):
    """Definitions whose next read waits until the test lets it go: the worker reading it has
    read the action's run already, and holds that reading while it waits."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def get(self, item_hash: str) -> dict[str, Any] | None:
        self.reached.set()
        await self.go.wait()
        return await super().get(item_hash)


async def test_a_worker_frozen_past_its_lease_records_nothing_over_its_successor(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path: Path,
    own_broker: str,
) -> None:
    """A worker that read the action's run and then stalled (frozen, paged out) past its lease
    loses the job to the next worker, which opens the ticket. When it goes on, it may record
    nothing: a start recorded then would hide the ticket from its poll, and the request would
    never complete."""
    async with stack_without_a_worker(
        postgres_server, settings, keys, jira_url, own_broker, tmp_path
    ) as (own, stack):
        # The fulfilment service's consumers run here; its job handlers are called by hand, as two
        # workers: the first is held after reading the run, the second runs freely.
        scope = Scope(own, stack.pool, EventStore(stack.pool), asyncio.Event())
        try:
            await scope.consume(definitions.CONSUMER, definitions.HANDLERS)
            await scope.consume(intake.CONSUMER, intake.HANDLERS)
            parts = await parts_from_settings(scope)
            held = HeldDefinitions(stack.pool)
            request_id = await submit(stack, "postgresql-rds", POSTGRES)

            async def claimed() -> list[jobs.Job]:
                return await jobs.claim(stack.pool, 1, lease=1.0, worker="first")

            (first_job,) = await eventually(claimed, timeout=30, what="the execute job")
            first = asyncio.create_task(steps.execute(replace(parts, definitions=held), first_job))
            await asyncio.wait_for(held.reached.wait(), timeout=10)

            async def taken_over() -> list[jobs.Job]:
                return await jobs.claim(stack.pool, 1, lease=30.0, worker="second")

            (second_job,) = await eventually(taken_over, timeout=10, what="the lease to lapse")
            assert second_job.id == first_job.id
            await steps.execute(parts, second_job)
            assert (await ledger.load(stack.pool, request_id)).runs["create_ticket"].status == (
                "awaiting_manual"
            )
            held.go.set()
            with pytest.raises(jobs.LeaseLost):
                await first
            run = (await ledger.load(stack.pool, request_id)).runs["create_ticket"]
            assert run.status == "awaiting_manual", run  # the ticket's poll still follows it
            assert (
                await issues_labelled(jira_url, idempotency_label(request_id, "create_ticket")) == 1
            )
        finally:
            await scope.close()
