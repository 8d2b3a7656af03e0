"""10,000 requests in flight at once, automated and manual, each followed to its terminal state.

    uv run --frozen python bench/in_flight.py [--count 10000] [--manual-share 0.5]
        [--clients 100] [--deadline 1800]

Half the requests (--manual-share) are `postgresql-rds`, fulfilled through a JIRA ticket on the
embedded JIRA; this run plays the DBA and moves every ticket it finds open to Done. The others are
an automated item with one REST action, SSM PutParameter on the embedded AWS (moto, SigV4-checked).
They are submitted as fast as --clients signed clients can (each with its own Idempotency-Key,
retrying what the platform refuses for the moment with the same key), so all of them are in
flight at once; then the run waits until every one is terminal.

The services run in the production layout, a `pao serve` process each: the gateway, the relay
with the projector, the request service, the fulfilment worker. Printed:

1. the submit rate, and the read-model lag under the load: from a 202 reaching this client to the
   request's row in `requests` (every 10th submit, polled every 10 ms);
2. the time from the first submit to the last request reaching a terminal state, with progress;
3. the accounting: every accepted request is in the read model, terminal, completed exactly once
   (one `RequestCompleted` in its stream); each manual one has one JIRA issue (distinct keys, and
   the JIRA project's issue count), each automated one one successful action;
4. the peak memory (VmHWM) of each PAO process, and of this load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
from botocore.credentials import ReadOnlyCredentials

from infra import broker, fresh_database, percentile
from pao.devctl.client import Target
from pao.devstack.aws import EmbeddedAws
from pao.devstack.jira import EmbeddedJira
from pao.fulfillment.jira import JiraClient
from pao.request.aggregate import stream_of
from pao.shared.database import create_pool
from request_flow import INPUTS as MANUAL_INPUTS
from request_flow import ITEM as MANUAL_ITEM
from request_flow import LAG_EVERY, LAG_POLL, Load, ReadModelWatch, Submitter
from rest_actions import ITEM as REST_ITEM
from rest_actions import ITEM_TEXT as REST_ITEM_TEXT
from rest_actions import aws_environments

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from support.processes import KEY_ID, SECRET, ServiceProcesses  # noqa: E402

TERMINAL = ("completed", "failed", "aborted", "rejected", "expired")
LAYOUT = {
    "gateway": ("gateway",),
    "relay": ("relay", "projector"),
    "request": ("request",),
    "fulfillment": ("fulfillment",),
}


class Mixed(Submitter):
    """Submits the manual item for a share of the requests and the REST item for the rest."""

    def __init__(self, http: aiohttp.ClientSession, url: str, manual_share: float) -> None:
        super().__init__(http, url)
        # Signed with the key the service processes are configured with (an admin's).
        self._target = Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
        self._manual_share = manual_share
        self._n = 0
        self.kinds: dict[str, str] = {}

    async def submit(self, key: str) -> tuple[str | None, str | None, float]:
        self._n += 1
        manual = (self._n * self._manual_share) % 1 < self._manual_share
        if manual:
            body = {"item_id": MANUAL_ITEM, "inputs": MANUAL_INPUTS}
        else:
            body = {"item_id": REST_ITEM, "inputs": {"name": uuid.uuid4().hex[:16]}}
        self._body = json.dumps(body).encode()
        request_id, error, ms = await super().submit(key)
        if request_id is not None:
            self.kinds[request_id] = "manual" if manual else "rest"
        return request_id, error, ms


async def submit_all(submitter: Mixed, clients: int, count: int, watch: ReadModelWatch) -> Load:
    """`count` accepted submits from `clients` clients, each retried with its own key."""
    load = Load()
    remaining = count
    started = time.perf_counter()

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            key = uuid.uuid4().hex
            while True:
                request_id, error, ms = await submitter.submit(key)
                load.latencies.append(ms)
                if request_id is not None:
                    load.accepted.append(request_id)
                    watch.accepted(request_id, time.perf_counter())
                    break
                load.errors[str(error)] += 1
                load.retries += 1
                await asyncio.sleep(0.2)

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


class TicketDesk:
    """Plays the people behind the tickets: moves every open issue of PAO's requests to Done."""

    def __init__(self, pool: asyncpg.Pool, jira: JiraClient) -> None:
        self._pool = pool
        self._jira = jira
        self.closed: set[str] = set()
        self.failures: Counter[str] = Counter()
        self._lanes = asyncio.Semaphore(8)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            rows = await self._pool.fetch(
                "SELECT DISTINCT a.external_key FROM request_actions a "
                "JOIN requests r USING (request_id) "
                "WHERE a.type = 'jira' AND a.external_key IS NOT NULL "
                "AND r.status = 'awaiting_manual'"
            )
            keys = [r["external_key"] for r in rows if r["external_key"] not in self.closed]
            if not keys:
                await asyncio.sleep(0.5)
                continue

            async def close(key: str) -> None:
                async with self._lanes:
                    try:
                        await self._jira.transition_to(key, "Done")
                        self.closed.add(key)
                    except Exception as exc:  # noqa: BLE001 - tried again on the next pass
                        self.failures[type(exc).__name__] += 1

            await asyncio.gather(*(close(k) for k in keys))


async def wait_terminal(pool: asyncpg.Pool, ids: list[str], started: float, deadline: float) -> int:
    """Print progress until every request is terminal or the deadline passes; how many are not."""
    next_report = time.perf_counter()
    while True:
        rows = await pool.fetch(
            "SELECT status, count(*) AS n FROM requests WHERE request_id = ANY($1::text[]) "
            "GROUP BY status",
            ids,
        )
        statuses = {r["status"]: r["n"] for r in rows}
        ended = sum(n for s, n in statuses.items() if s in TERMINAL)
        now = time.perf_counter()
        if ended == len(ids) or now - started > deadline or now >= next_report:
            print(f"  {now - started:5.0f} s: {ended:,}/{len(ids):,} terminal, {statuses}")
            next_report = now + 10
        if ended == len(ids) or now - started > deadline:
            return len(ids) - ended
        await asyncio.sleep(1.0)


async def account(
    pool: asyncpg.Pool, submitter: Mixed, ids: list[str], jira_url: str, http: aiohttp.ClientSession
) -> None:
    """Every request once: in the read model, completed once, one issue or one action each."""
    streams = [stream_of(i) for i in ids]
    completions = {
        r["stream_id"]: r["n"]
        for r in await pool.fetch(
            "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'RequestCompleted' "
            "AND stream_id = ANY($1::text[]) GROUP BY stream_id",
            streams,
        )
    }
    twice = sum(1 for n in completions.values() if n > 1)
    in_model = await pool.fetchval(
        "SELECT count(*) FROM requests WHERE request_id = ANY($1::text[])", ids
    )
    manual = [i for i in ids if submitter.kinds[i] == "manual"]
    rest = [i for i in ids if submitter.kinds[i] == "rest"]
    keys = await pool.fetch(
        "SELECT request_id, count(DISTINCT external_key) AS n FROM request_actions "
        "WHERE type = 'jira' AND request_id = ANY($1::text[]) GROUP BY request_id",
        manual,
    )
    one_key = sum(1 for r in keys if r["n"] == 1)
    succeeded = await pool.fetch(
        "SELECT stream_id, count(*) AS n FROM events WHERE event_type = 'ActionSucceeded' "
        "AND stream_id = ANY($1::text[]) GROUP BY stream_id",
        [stream_of(i) for i in rest],
    )
    one_action = sum(1 for r in succeeded if r["n"] == 1)
    async with http.get(
        f"{jira_url}/rest/api/2/search", params={"jql": "project = DBA", "maxResults": "0"}
    ) as answer:
        issues = (await answer.json())["total"]
    print(
        f"3. accounted for: {in_model:,}/{len(ids):,} in the read model; "
        f"{sum(1 for n in completions.values() if n == 1):,} completed exactly once, "
        f"{twice} twice or more, {len(ids) - len(completions):,} never completed; "
        f"manual {one_key:,}/{len(manual):,} with one JIRA issue ({issues:,} issues in the "
        f"project); automated {one_action:,}/{len(rest):,} with one successful action"
    )


def peak_memory(pid: int) -> str:
    """The process's peak resident set (VmHWM), or why it is not known."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return f"{int(line.split()[1]) / 1024:,.0f} MiB"
    except OSError:
        pass
    return "unknown (process gone)"


async def measure(args: argparse.Namespace, processes: ServiceProcesses, dsn: str, jira_url: str):
    pool = await create_pool(dsn, min_size=1, max_size=4, application_name="bench")
    connector = aiohttp.TCPConnector(limit=args.clients)
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            submitter = Mixed(http, processes.gateway_url, args.manual_share)
            desk = TicketDesk(pool, JiraClient(jira_url, session=http))
            closing = asyncio.create_task(desk.run(stop))
            watch = ReadModelWatch(pool)
            load_done = asyncio.Event()
            watching = asyncio.create_task(watch.run(load_done))
            started = time.perf_counter()
            load = await submit_all(submitter, args.clients, args.count, watch)
            load_done.set()
            print(
                f"1. {len(load.accepted):,} accepted in {load.seconds:.1f} s "
                f"({len(load.accepted) / load.seconds:,.0f}/s, {args.clients} clients), "
                f"p50 {percentile(load.latencies, 50):.0f} ms, "
                f"p99 {percentile(load.latencies, 99):.0f} ms, {load.retries} retried "
                f"({dict(load.errors) or 'no refusals'})",
                flush=True,
            )
            unseen = await watching
            print(
                f"   read-model lag under the load (every {LAG_EVERY}th submit, polled every "
                f"{LAG_POLL * 1000:.0f} ms, {len(watch.lags):,} samples): "
                f"p50 {percentile(watch.lags, 50):.0f} ms, p99 {percentile(watch.lags, 99):.0f} ms"
                + (f", {unseen} not seen within 30 s" if unseen else ""),
                flush=True,
            )
            print("2. waiting for every request to end", flush=True)
            left = await wait_terminal(pool, load.accepted, started, args.deadline)
            took = time.perf_counter() - started
            stop.set()
            await closing
            print(
                f"2. {len(load.accepted):,} requests in flight: "
                + (f"all terminal {took:.1f} s" if not left else f"{left:,} NOT terminal after")
                + f" after the first submit; {len(desk.closed):,} tickets moved to Done"
                + (f", transition failures {dict(desk.failures)}" if desk.failures else ""),
                flush=True,
            )
            await account(pool, submitter, load.accepted, jira_url, http)
    finally:
        stop.set()
        await pool.close()
    print("4. peak memory (VmHWM):")
    for name, process in processes.processes.items():
        if process.process is not None:
            print(f"  {name:12s} {peak_memory(process.process.pid)}")
    print(f"  {'load (this)':12s} {peak_memory(os.getpid())}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "catalog"
        shutil.copytree(REPO / "catalog", catalog)
        (catalog / "security" / f"{REST_ITEM}.yaml").write_text(REST_ITEM_TEXT)
        aws = EmbeddedAws(tmp)
        endpoint = await aws.start()
        jira = EmbeddedJira(tmp)
        jira_url = await jira.start()
        try:
            identity = await aws.bootstrap(tmp / "aws")
            environments = aws_environments(tmp, identity.region, endpoint)
            async with fresh_database() as dsn, broker() as bootstrap:
                processes = ServiceProcesses.configured(
                    tmp,
                    database_url=dsn,
                    kafka=bootstrap,
                    jira=jira_url,
                    PAO_CATALOG_DIR=str(catalog),
                    PAO_ENVIRONMENTS_FILE=str(environments),
                    PAO_AWS_ENDPOINT_URL=endpoint,
                    PAO_LOG_LEVEL="warning",
                    PAO_JIRA_POLL_SECONDS=str(args.jira_poll_seconds),
                    PAO_FULFILLMENT_CONCURRENCY=str(args.worker_concurrency),
                    PAO_FULFILLMENT_LEASE_SECONDS="30",
                    **identity.environ(),
                )
                for name, services in LAYOUT.items():
                    processes.start(name, *services)
                try:
                    await processes.ready()
                    await measure(args, processes, dsn, jira_url)
                finally:
                    dead = [name for name, alive in processes.alive().items() if not alive]
                    await processes.stop_all()
                    if dead:
                        print(f"stopped early: {dead}\n{processes.logs(*dead, lines=10)}")
        finally:
            await jira.stop()
            await aws.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="requests in flight at once")
    parser.add_argument("--manual-share", type=float, default=0.5, help="share through JIRA")
    parser.add_argument("--clients", type=int, default=100, help="concurrent signed clients")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds to wait")
    parser.add_argument("--jira-poll-seconds", type=float, default=5.0)
    parser.add_argument("--worker-concurrency", type=int, default=32)
    os.environ.setdefault("PAO_LOG_LEVEL", "warning")
    asyncio.run(main(parser.parse_args()))
