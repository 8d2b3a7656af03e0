"""Reading a request vs revalidating it: `GET /api/v1/requests/{id}` with and without
`If-None-Match`, and their floor, one run.

    uv run python bench/http_cache.py [--clients 100] [--count 5000] [--warmup 500]

The same client code (aiohttp, every call signed with SigV4 by devctl's `sign`) reads one
projected request from `pao serve gateway` (its own process, as in production, on a fresh
database and a broker) in three ways, one after the other:

- read: a plain GET; the gateway reads the request's row and actions from PostgreSQL and
  answers 200 with the whole request, tagged.
- revalidate: the same GET with `If-None-Match` naming the current tag; the gateway answers 304
  from the versions it keeps in memory (pao.gateway.caching), without the database.
- floor: an aiohttp handler in its own process answering the same path with a fixed small JSON
  body. No signature check, no database.

For each: calls/s over --count calls after --warmup, p50 and p99 (GET sent -> answer read), and
the server process's CPU time per call (user + system, from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from botocore.credentials import ReadOnlyCredentials

from infra import broker, fresh_database, percentile, serve_until_cancelled, stop_all
from pao.contracts.topics import ALL_TOPICS
from pao.devctl.client import Target, sign
from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess
from pao.request.projection import Projector
from pao.shared.database import create_pool
from pao.shared.kafka import ensure_topics
from pao.shared.settings import Settings
from submit_floor import INPUTS, ITEM, KEY_ID, SECRET, Load, cpu_seconds, ready, start_gateways

_FLOOR_BODY = {"request_id": "floor", "status": "submitted", "stream_version": 1}


async def serve_floor(port: int) -> None:
    """The floor server: a fixed small JSON answer to any request's GET."""
    from aiohttp import web

    async def get_request(_: web.Request) -> web.Response:
        return web.json_response(_FLOOR_BODY)

    await serve_until_cancelled({("GET", "/api/v1/requests/{request_id}"): get_request}, port)


def start_floor(tmp: Path) -> tuple[ChildProcess, str]:
    port = free_port()
    process = ChildProcess(
        "floor",
        [sys.executable, str(Path(__file__).resolve()), "--floor", str(port)],
        log_path=tmp / "floor.log",
        env=dict(os.environ),
    )
    process.start()
    return process, f"http://127.0.0.1:{port}"


def _target(url: str) -> Target:
    return Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))


async def submitted(http: aiohttp.ClientSession, url: str, dsn: str) -> tuple[str, str]:
    """One request, submitted and projected; its id and the tag of its answer."""
    path = f"{url}/api/v1/requests"
    body = json.dumps({"item_id": ITEM, "inputs": INPUTS}).encode()
    headers = sign(_target(url), "POST", path, body, {"Content-Type": "application/json"})
    async with http.post(path, data=body, headers=headers) as response:
        assert response.status == 202, await response.text()
        request_id = (await response.json())["request_id"]
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        deadline = time.monotonic() + 30
        while not await pool.fetchval("SELECT 1 FROM requests WHERE request_id = $1", request_id):
            assert time.monotonic() < deadline, "the request was never projected"
            await Projector(pool).catch_up()
            await asyncio.sleep(0.05)
    finally:
        await pool.close()
    read = f"{url}/api/v1/requests/{request_id}"
    async with http.get(read, headers=sign(_target(url), "GET", read, b"", {})) as response:
        assert response.status == 200, await response.text()
        return request_id, response.headers["ETag"]


async def run_clients(
    http: aiohttp.ClientSession,
    url: str,
    clients: int,
    total: int,
    *,
    etag: str | None,
    expected: int,
) -> Load:
    """`clients` signed clients reading back to back until `total` reads are answered."""
    target = _target(url)
    extra = {"Accept": "application/json", **({"If-None-Match": etag} if etag else {})}
    load = Load()
    remaining = total

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            headers = sign(target, "GET", url, b"", extra)
            started = time.perf_counter()
            try:
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = 0
                load.errors[type(exc).__name__] = load.errors.get(type(exc).__name__, 0) + 1
            load.latencies.append((time.perf_counter() - started) * 1000)
            if status and status != expected:
                load.errors[str(status)] = load.errors.get(str(status), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


def report(name: str, load: Load) -> tuple[float, float]:
    rate = len(load.latencies) / load.seconds
    p99 = percentile(load.latencies, 99)
    errors = sum(load.errors.values())
    print(
        f"  {name:<10} {rate:7,.0f} reads/s   p50 {percentile(load.latencies, 50):6.1f} ms   "
        f"p99 {p99:6.1f} ms   {load.cpu_seconds * 1000 / len(load.latencies):5.2f} CPU-ms/read"
        f"   errors {errors}" + (f" {load.errors}" if errors else ""),
        flush=True,
    )
    return rate, p99


async def main(clients: int, count: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with fresh_database() as dsn, broker() as bootstrap:
            await ensure_topics(Settings(database_url=dsn, kafka_bootstrap=bootstrap), ALL_TOPICS)
            gateways, pao_url = start_gateways(dsn, bootstrap, tmp, 1)
            floor, floor_url = start_floor(tmp)
            try:
                await ready(pao_url, gateways)
                await ready(floor_url, [floor])
                connector = aiohttp.TCPConnector(limit=clients)
                async with aiohttp.ClientSession(connector=connector) as http:
                    request_id, etag = await submitted(http, pao_url, dsn)
                    path = f"/api/v1/requests/{request_id}"
                    print(
                        f"GET {path}: {clients} concurrent signed clients, {count:,} reads "
                        f"after {warmup:,} warm-up, one gateway process",
                        flush=True,
                    )
                    rows = (
                        ("read", pao_url, gateways, None, 200),
                        ("revalidate", pao_url, gateways, etag, 304),
                        ("floor", floor_url, [floor], None, 200),
                    )
                    figures = {}
                    for name, base, processes, tag, expected in rows:
                        url = f"{base}{path}"
                        await run_clients(http, url, clients, warmup, etag=tag, expected=expected)
                        before = cpu_seconds(*processes)
                        load = await run_clients(
                            http, url, clients, count, etag=tag, expected=expected
                        )
                        load.cpu_seconds = cpu_seconds(*processes) - before
                        figures[name] = report(name, load)
                    (read, read_p99), (again, again_p99) = figures["read"], figures["revalidate"]
                    floor_rate = figures["floor"][0]
                    print(
                        f"  revalidate/read: x{again / read:.1f} the throughput, "
                        f"p99 x{again_p99 / read_p99:.2f}; revalidate/floor: "
                        f"{again / floor_rate:.2f} of the throughput",
                        flush=True,
                    )
            finally:
                await stop_all((*gateways, floor))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--floor":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_floor(int(sys.argv[2])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.count, args.warmup))
