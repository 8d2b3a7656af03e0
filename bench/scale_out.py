"""Scale-out: completed requests per second with 1, 2 and 4 fulfilment workers, and the request
process manager's consumer lag with 1 and 2 instances, in one run.

    uv run python bench/scale_out.py [--requests 300] [--api-ms 200] [--concurrency 4]

Every PAO service runs as its own `pao serve` process (gateway; relay + projector; request;
notification; N x fulfillment) on a fresh database and broker. The item is a REST action
against a local HTTP API that answers after --api-ms (an API that takes its time, as a cloud API
does), and each worker runs --concurrency actions at once (PAO_FULFILLMENT_CONCURRENCY), so one
worker's throughput is bounded by the API's latency, as in production, not by these 2 cores.

1. --requests are submitted through the gateway (10 signed clients, each with its own
   Idempotency-Key); completed requests/s = requests / (last RequestCompleted - first
   RequestSubmitted), from the store's clocks; the scaling ratio is against 1 worker.
2. consumer lag of the request process manager (`pao-request-process`): processed_at of each
   event it handled minus recorded_at of that event, p50/p99, with 1 and then 2 instances (2
   workers), under the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from aiohttp import web

from infra import broker, fresh_database, percentile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from support.processes import ServiceProcesses, call  # noqa: E402

ITEM = """apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: bench-registration
  name: Benchmark registration
  category: observability
  owner: team-platform
  version: 1.0.0
  description: Registers a service with an API that takes its time to answer.
form:
  schema:
    type: object
    required: [service]
    properties:
      service: {type: string, pattern: "^[a-z][a-z0-9-]{2,39}$"}
    examples:
      - {service: orders-api}
fulfillment:
  mode: automated
  actions:
    - name: register
      type: rest
      retry: {max_attempts: 3, initial_backoff_seconds: 1}
      rest:
        method: POST
        url: "API_URL/services"
        body:
          name: "{{ inputs.service }}"
          request: "{{ request.id }}"
        expected_status: [201]
        outputs:
          service_id: /id
"""


async def slow_api(delay: float) -> tuple[web.AppRunner, str]:
    async def register(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        return web.json_response({"id": f"svc-{body['request']}"}, status=201)

    app = web.Application()
    app.router.add_post("/services", register)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def catalog_with_item(tmp: Path, api_url: str) -> Path:
    catalog = tmp / "catalog"
    shutil.copytree(REPO / "catalog", catalog)
    (catalog / "observability").mkdir(exist_ok=True)
    (catalog / "observability" / "bench-registration.yaml").write_text(
        ITEM.replace("API_URL", api_url), encoding="utf-8"
    )
    return catalog


async def submit_all(url: str, count: int, clients: int = 10) -> list[str]:
    async def one_client(c: int) -> list[str]:
        ids = []
        for n in range(c, count, clients):
            answer = await call(
                url,
                "POST",
                "/requests",
                body={"item_id": "bench-registration", "inputs": {"service": f"svc-{n}"}},
                extra_headers={"Idempotency-Key": f"bench-{n}"},
            )
            ids.append(answer["request_id"])
        return ids

    batches = await asyncio.gather(*(one_client(c) for c in range(clients)))
    return [request_id for batch in batches for request_id in batch]


async def run(
    tmp: Path,
    catalog: Path,
    *,
    workers: int,
    requesters: int,
    requests: int,
    concurrency: int,
) -> tuple[float, list[float]]:
    """One configuration: completed requests/s and the process manager's lags (ms)."""
    async with fresh_database() as dsn, broker() as bootstrap:
        processes = ServiceProcesses.configured(
            tmp,
            database_url=dsn,
            kafka=bootstrap,
            jira="http://127.0.0.1:9",
            PAO_CATALOG_DIR=str(catalog),
            PAO_FULFILLMENT_CONCURRENCY=str(concurrency),
            PAO_LOG_LEVEL="warning",
        )
        processes.start("gateway", "gateway")
        processes.start("relay", "relay", "projector")
        processes.start("notification", "notification")
        for n in range(requesters):
            processes.start(f"request-{n}", "request")
        for n in range(workers):
            processes.start(f"fulfillment-{n}", "fulfillment")
        try:
            await processes.ready()
            await asyncio.sleep(8)  # the consumer groups settle (tansu joins take seconds)
            ids = await submit_all(processes.gateway_url, requests)
            conn = await asyncpg.connect(dsn)
            try:
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    done = await conn.fetchval(
                        "SELECT count(*) FROM events WHERE event_type = 'RequestCompleted'"
                    )
                    if done >= len(ids):
                        break
                    await asyncio.sleep(0.5)
                span = await conn.fetchval(
                    "SELECT extract(epoch FROM max(recorded_at) FILTER (WHERE event_type = "
                    "'RequestCompleted') - min(recorded_at) FILTER (WHERE event_type = "
                    "'RequestSubmitted')) FROM events"
                )
                lags = [
                    float(r["ms"])
                    for r in await conn.fetch(
                        "SELECT extract(epoch FROM p.processed_at - e.recorded_at) * 1000 AS ms "
                        "FROM processed_events p JOIN events e USING (event_id) "
                        "WHERE p.consumer = 'pao-request-process'"
                    )
                ]
            finally:
                await conn.close()
            return done / float(span), lags
        finally:
            await processes.stop_all()


async def main(requests: int, api_ms: float, concurrency: int) -> None:
    runner, api_url = await slow_api(api_ms / 1000)
    try:
        with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
            tmp = Path(tmp_name)
            catalog = catalog_with_item(tmp, api_url)
            print(
                f"{requests} requests, a REST API answering in {api_ms:.0f} ms, "
                f"{concurrency} actions at once per worker"
            )
            rates = {}
            for workers in (1, 2, 4):
                work = tmp / f"w{workers}"
                work.mkdir()
                rate, _ = await run(
                    work, catalog, workers=workers, requesters=1, requests=requests,
                    concurrency=concurrency,
                )  # fmt: skip
                rates[workers] = rate
                print(
                    f"figure 1: {workers} fulfilment worker(s): {rate:,.1f} completed requests/s "
                    f"(x{rate / rates[1]:.2f} of 1 worker)",
                    flush=True,
                )
            for requesters in (1, 2):
                work = tmp / f"r{requesters}"
                work.mkdir()
                _, lags = await run(
                    work, catalog, workers=2, requesters=requesters, requests=requests,
                    concurrency=concurrency,
                )  # fmt: skip
                print(
                    f"figure 2: {requesters} request process manager instance(s): consumer lag "
                    f"p50 {percentile(lags, 50):,.0f} ms, p99 {percentile(lags, 99):,.0f} ms "
                    f"({len(lags):,} events)",
                    flush=True,
                )
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--api-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("PAO_LOG_LEVEL", "warning")
    asyncio.run(main(args.requests, args.api_ms, args.concurrency))
