"""Request figures: submit throughput and latency, submit to JIRA issue, read-model lag, and
1,000 requests in flight at once.

    uv run python bench/request_flow.py [--clients 100] [--seconds 10] [--inflight 1000]
                                    [--skip-inflight] [--jira-poll-seconds 30]

The PAO services run as in production, apart from this process (the load generator), in three
processes: `pao serve gateway`, `pao serve relay projector` and `pao serve request fulfillment`,
on a fresh database, a broker and an embedded JIRA. Every submit is a `POST /api/v1/requests`
for postgresql-rds with its own Idempotency-Key, signed with SigV4 for that request (the
signing cost stays here). Each submit ends in a JIRA issue: the fulfillment worker opens it and
records ActionAwaitingManual, then reads every open issue each --jira-poll-seconds; those reads
share the worker's queue with the issues still to open, so the queue is printed while figures 2
and 4 wait.

1. submits/s and latency (POST sent -> 202 read) at N clients for S seconds, after a 2 s warm-up.
2. submit -> JIRA issue open, from the store's clocks: recorded_at of ActionAwaitingManual minus
   recorded_at of RequestSubmitted, for a sample of at most 300 of figure 1's requests.
3. read-model lag: time from a 202 reaching the client to the request's row being in `requests`
   (polled here every 10 ms for every 10th submit of figure 1).
4. --inflight requests (default 1,000) submitted as fast as the clients can, then the time until
   every one is awaiting_manual, and a count of each request and its one JIRA issue key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
from botocore.credentials import ReadOnlyCredentials

from infra import broker, fresh_database, percentile, write_keys
from pao.devctl.client import Target, sign
from pao.devstack.jira import EmbeddedJira
from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess
from pao.request.aggregate import stream_of
from pao.shared.database import create_pool

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REPO = HERE.parent
KEY_ID, SECRET = "PAOBENCHKEY000000002", "bench-secret"
ITEM = "postgresql-rds"
INPUTS = {
    "db_name": "bench",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "bench@example.com",
}
ISSUE_SAMPLE = 300
DRAIN_SECONDS = 60.0
LAG_EVERY = 10
LAG_POLL = 0.01
INFLIGHT_DEADLINE = 600.0


@dataclass
class Load:
    """What one run of clients saw."""

    seconds: float = 0.0
    accepted: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0


class Submitter:
    """Signs and sends one submit at a time; answers the request id or why it failed."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._path = f"{url}/api/v1/requests"
        self._target = Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
        self._body = json.dumps({"item_id": ITEM, "inputs": INPUTS}).encode()

    async def submit(self, key: str) -> tuple[str | None, str | None, float]:
        """(request id, None, ms) on 202, else (None, what went wrong, ms)."""
        headers = sign(
            self._target,
            "POST",
            self._path,
            self._body,
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Idempotency-Key": key,
            },
        )
        started = time.perf_counter()
        try:
            async with self._http.post(self._path, data=self._body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, type(exc).__name__, (time.perf_counter() - started) * 1000
        elapsed = (time.perf_counter() - started) * 1000
        if status != 202:
            return None, f"{status} {_error_code(answer)}", elapsed
        return json.loads(answer)["request_id"], None, elapsed


def _error_code(answer: bytes) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(answer)["error"]["code"])
    return answer[:80].decode(errors="replace")


async def start_stack(  # the gateway and the other services, each process its own
    dsn: str,
    bootstrap: str,
    jira_url: str,
    poll_seconds: float,
    tmp: Path,
    *,
    pao: Path = BIN / "pao",
    catalog: Path = REPO / "catalog",
) -> tuple[list[ChildProcess], str]:
    keys = write_keys(tmp, KEY_ID, SECRET)
    port = free_port()
    env = {
        **os.environ,
        "PAO_DATABASE_URL": dsn,
        "PAO_KAFKA_BOOTSTRAP": bootstrap,
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_JIRA_URL": jira_url,
        "PAO_JIRA_POLL_SECONDS": str(poll_seconds),
        "PAO_KEYS_FILE": str(keys),
        "PAO_HTTP_HOST": "127.0.0.1",
        "PAO_HTTP_PORT": str(port),
        "PAO_CATALOG_DIR": str(catalog),
        "PAO_DATA_DIR": str(tmp),
        "PAO_LOG_LEVEL": "warning",
    }
    # As in production, the gateway and the event-driven services run in separate processes.
    stack = [
        ChildProcess(name, [str(pao), "serve", *services], log_path=tmp / f"{name}.log", env=env)
        for name, services in (
            ("relay-projector", ["relay", "projector"]),
            ("request-fulfillment", ["request", "fulfillment"]),
            ("gateway", ["gateway"]),
        )
    ]
    for process in stack:
        process.start()
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if not all(p.running for p in stack):
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/api/v1/health/ready") as r:
                    if r.status == 200:
                        return stack, url
            await asyncio.sleep(0.1)
    tail = "\n".join(p.log_tail() for p in stack)
    for process in stack:
        await process.stop()
    raise RuntimeError(f"the PAO services did not become ready:\n{tail}")


async def run_clients(
    submitter: Submitter,
    clients: int,
    *,
    seconds: float | None = None,
    total: int | None = None,
    retries: int = 0,
    on_accepted: Callable[[str, float], None] | None = None,
) -> Load:
    """Clients submitting back to back, for `seconds` or until `total` are accepted."""
    load = Load()
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else float("inf")
    remaining = total if total is not None else -1

    async def client() -> None:
        nonlocal remaining
        while time.perf_counter() < deadline and remaining != 0:
            remaining -= 1
            key = uuid.uuid4().hex
            for attempt in range(retries + 1):
                request_id, error, ms = await submitter.submit(key)
                load.latencies.append(ms)
                if request_id is not None:
                    load.accepted.append(request_id)
                    if on_accepted is not None:
                        on_accepted(request_id, time.perf_counter())
                    break
                load.errors[str(error)] += 1
                if attempt < retries:
                    load.retries += 1
                    await asyncio.sleep(0.1)

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


class ReadModelWatch:
    """Times, for sampled submits, from the 202 at the client to the row in `requests`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pending: dict[str, float] = {}
        self._accepted = 0
        self.lags: list[float] = []

    def accepted(self, request_id: str, at: float) -> None:
        self._accepted += 1
        if self._accepted % LAG_EVERY == 0:
            self._pending[request_id] = at

    async def run(self, load_done: asyncio.Event, patience: float = 30.0) -> int:
        """Poll until the load is done and every sample is seen; return how many were not."""
        give_up = float("inf")
        while not (load_done.is_set() and not self._pending):
            if load_done.is_set() and give_up == float("inf"):
                give_up = time.perf_counter() + patience
            if time.perf_counter() > give_up:
                break
            if self._pending:
                # A row seen by a query started at t was visible by then: one poll of error.
                asked_at = time.perf_counter()
                found = await self._pool.fetch(
                    "SELECT request_id FROM requests WHERE request_id = ANY($1::text[])",
                    list(self._pending),
                )
                for row in found:
                    self.lags.append((asked_at - self._pending.pop(row["request_id"])) * 1000)
            await asyncio.sleep(LAG_POLL)
        return len(self._pending)


async def issue_delays(pool: asyncpg.Pool, request_ids: list[str]) -> list[float]:
    """ms from RequestSubmitted to ActionAwaitingManual, per request that has both."""
    rows = await pool.fetch(
        """SELECT extract(epoch FROM a.recorded_at - s.recorded_at) * 1000 AS ms
           FROM events s JOIN events a
             ON a.stream_id = s.stream_id AND a.event_type = 'ActionAwaitingManual'
           WHERE s.stream_id = ANY($1::text[]) AND s.event_type = 'RequestSubmitted'""",
        [stream_of(r) for r in request_ids],
    )
    return [float(r["ms"]) for r in rows]


async def queued(pool: asyncpg.Pool) -> str:
    """The fulfillment queue: executions not done yet, and JIRA polls overdue."""
    row = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE kind = 'execute' AND state <> 'done') AS executions,
                  count(*) FILTER (WHERE kind = 'poll' AND state = 'pending' AND due_at <= now())
                      AS polls
           FROM fulfillment_jobs"""
    )
    return f"{row['executions']:,} executions queued, {row['polls']:,} polls overdue"


async def wait_for_issues(pool: asyncpg.Pool, sample: list[str], stopped_at: float) -> list[float]:
    """Wait (printing progress) until the sample's issues are open or the deadline passes."""
    deadline = stopped_at + DRAIN_SECONDS
    next_report = time.perf_counter()
    while True:
        delays = await issue_delays(pool, sample)
        now = time.perf_counter()
        if len(delays) == len(sample) or now > deadline or now >= next_report:
            print(
                f"  {now - stopped_at:4.0f} s after the load: {len(delays)}/{len(sample)} of the "
                f"sample awaiting_manual, {await queued(pool)}",
                flush=True,
            )
            next_report = now + 5
        if len(delays) == len(sample) or now > deadline:
            return delays
        await asyncio.sleep(0.5)


async def in_flight(pool: asyncpg.Pool, submitter: Submitter, clients: int, count: int) -> None:
    print(f"figure 4: before the submits, {await queued(pool)}", flush=True)
    started = time.perf_counter()
    load = await run_clients(submitter, clients, total=count, retries=5)
    submitted_in = time.perf_counter() - started
    ids = load.accepted
    print(
        f"  {len(ids):,}/{count:,} accepted in {submitted_in:.1f} s "
        f"({len(ids) / submitted_in:,.0f}/s), {load.retries} retried submits, "
        f"errors {dict(load.errors) or 0}",
        flush=True,
    )
    next_report = time.perf_counter() + 5
    waiting = len(ids)
    while waiting and time.perf_counter() - started < INFLIGHT_DEADLINE:
        await asyncio.sleep(0.25)
        waiting = len(ids) - await pool.fetchval(
            "SELECT count(*) FROM requests WHERE request_id = ANY($1::text[]) "
            "AND status = 'awaiting_manual'",
            ids,
        )
        if time.perf_counter() >= next_report:
            print(
                f"  {time.perf_counter() - started:4.0f} s: {len(ids) - waiting:,}/{len(ids):,} "
                f"awaiting_manual, {await queued(pool)}",
                flush=True,
            )
            next_report += 5
    took = time.perf_counter() - started
    rows = await pool.fetch(
        """SELECT r.request_id, r.status, count(DISTINCT a.external_key) AS keys
           FROM requests r LEFT JOIN request_actions a
             ON a.request_id = r.request_id AND a.type = 'jira'
           WHERE r.request_id = ANY($1::text[])
           GROUP BY r.request_id, r.status""",
        ids,
    )
    found = {r["request_id"]: r for r in rows}
    good = [i for i in ids if i in found and found[i]["keys"] == 1]
    issues = await pool.fetchval(
        "SELECT count(DISTINCT external_key) FROM request_actions "
        "WHERE request_id = ANY($1::text[]) AND type = 'jira'",
        ids,
    )
    statuses = Counter(r["status"] for r in rows)
    outcome = "all awaiting_manual" if not waiting else f"{waiting:,} NOT awaiting_manual"
    print(
        f"{count:,} requests in flight ({clients} clients): {outcome} "
        f"{took:.1f} s after the first submit (polled every 0.25 s); "
        f"{len(good):,}/{count:,} accounted for ({len(rows):,} in `requests`, "
        f"{issues:,} distinct JIRA issue keys), statuses {dict(statuses)}"
    )
    lost = [i for i in ids if i not in good]
    if lost or len(ids) < count:
        print(f"LOST {len(lost) + count - len(ids)}: {' '.join(lost)}")


async def main(
    clients: int, seconds: float, inflight: int, skip_inflight: bool, poll_seconds: float
) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with fresh_database() as dsn, broker() as bootstrap:
            jira = EmbeddedJira(tmp)
            jira_url = await jira.start()
            try:
                stack, url = await start_stack(dsn, bootstrap, jira_url, poll_seconds, tmp)
                try:
                    pool = await create_pool(dsn, min_size=1, max_size=4, application_name="bench")
                    try:
                        await measure(pool, url, clients, seconds, inflight, skip_inflight)
                    finally:
                        await pool.close()
                finally:
                    for process in stack:
                        crashed = not process.running
                        await process.stop(timeout=30)
                        report_log(process, crashed)
            finally:
                await jira.stop()


async def measure(
    pool: asyncpg.Pool,
    url: str,
    clients: int,
    seconds: float,
    inflight: int,
    skip_inflight: bool,
) -> None:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        submitter = Submitter(http, url)
        await run_clients(submitter, clients, seconds=2)  # warm up
        watch = ReadModelWatch(pool)
        load_done = asyncio.Event()
        watcher = asyncio.create_task(watch.run(load_done))
        load = await run_clients(submitter, clients, seconds=seconds, on_accepted=watch.accepted)
        load_done.set()
        stopped_at = time.perf_counter()
        answered = len(load.latencies)
        print(
            f"figure 1: POST /api/v1/requests, {clients} concurrent signed clients, "
            f"{load.seconds:.0f} s: {answered / load.seconds:,.0f} requests/s "
            f"({len(load.accepted):,} accepted), p50 {percentile(load.latencies, 50):.1f} ms, "
            f"p99 {percentile(load.latencies, 99):.1f} ms, "
            f"errors {sum(load.errors.values())}"
            + (f" {dict(load.errors)}" if load.errors else ""),
            flush=True,
        )
        unseen = await watcher
        print(
            f"figure 3: read-model lag, 202 at the client -> row in `requests` "
            f"(every {LAG_EVERY}th submit, {len(watch.lags):,} samples, polled every "
            f"{LAG_POLL * 1000:.0f} ms): p50 {percentile(watch.lags, 50):.0f} ms, "
            f"p99 {percentile(watch.lags, 99):.0f} ms"
            + (f", {unseen} not seen within 30 s" if unseen else ""),
            flush=True,
        )
        sample = random.Random(7).sample(load.accepted, min(ISSUE_SAMPLE, len(load.accepted)))
        print(f"figure 2: waiting up to {DRAIN_SECONDS:.0f} s for the sample's JIRA issues")
        delays = await wait_for_issues(pool, sample, stopped_at)
        print(
            f"figure 2: submit -> JIRA issue open (RequestSubmitted -> ActionAwaitingManual, "
            f"{len(sample)} of figure 1's requests): p50 {percentile(delays, 50):,.0f} ms, "
            f"p99 {percentile(delays, 99):,.0f} ms; {len(delays)}/{len(sample)} reached "
            f"awaiting_manual within {DRAIN_SECONDS:.0f} s of the load stopping",
            flush=True,
        )
        if not skip_inflight:
            await in_flight(pool, submitter, clients, inflight)


def report_log(process: ChildProcess, crashed: bool) -> None:
    lines = process.log_path.read_text(errors="replace").splitlines()
    if crashed:
        print(f"the {process.name} process had stopped before the end of the run")
    if lines:
        print(
            f"the {process.name} process logged {len(lines)} line(s) at warning or above; the last:"
        )
        print("\n".join(f"  {line[:300]}" for line in lines[-5:]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--inflight", type=int, default=1_000)
    parser.add_argument("--skip-inflight", action="store_true")
    parser.add_argument(
        "--jira-poll-seconds",
        type=float,
        default=30.0,
        help="how often the worker reads each open JIRA issue (PAO_JIRA_POLL_SECONDS)",
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.clients, args.seconds, args.inflight, args.skip_inflight, args.jira_poll_seconds)
    )
