"""Automated requests with one REST action against AWS (moto, SigV4-checked): submit to
completed at 1 and at --in-flight requests at once, and completions per second sustained for
--seconds; each next to its floor, the same SSM PutParameter call signed and sent directly
(botocore's SigV4 over aiohttp), at the same concurrency, in the same run.

    uv run --frozen python bench/rest_actions.py [--sequential 30] [--in-flight 50]
        [--concurrent 200] [--seconds 60]

The item (written for the run, one action) puts one String parameter through `PutParameter`
(JSON 1.1, `X-Amz-Target: AmazonSSM.PutParameter`), signed with the key the embedded AWS
bootstraps. The PAO services run as `pao serve` processes (gateway, relay, projector and
request in one; fulfillment in another) on a fresh database and a broker, like the other
benchmarks. Requests go through the gateway, signed (SigV4, as devctl signs) and sent over aiohttp,
each with its own Idempotency-Key;
"submit to completed" is the request's finished_at - created_at (store clocks), and the client's
own time from sending the submit to seeing `completed` in the read model (polled every 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import aiohttp
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from infra import broker, fresh_database, percentile
from pao.devctl.client import Target, sign
from pao.devstack.aws import EmbeddedAws
from pao.shared.database import create_pool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from provisioning import Completions  # noqa: E402
from support.processes import KEY_ID, SECRET, ServiceProcesses, call  # noqa: E402

ITEM = "bench-parameter"
ITEM_TEXT = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: bench-parameter
  name: Bench parameter
  category: security
  owner: team-security
  version: 1.0.0
  description: One SSM parameter, put with one REST action.
form:
  schema:
    type: object
    additionalProperties: false
    required: [name]
    properties:
      name: {type: string, pattern: "^[a-z0-9-]{1,60}$"}
    examples: [{name: example}]
fulfillment:
  mode: automated
  actions:
    - name: put_parameter
      type: rest
      rest:
        method: POST
        url: /
        auth: {type: aws_sigv4, service: ssm}
        headers:
          X-Amz-Target: AmazonSSM.PutParameter
          Content-Type: application/x-amz-json-1.1
        body:
          Name: "/bench/{{ inputs.name }}"
          Type: String
          Value: "{{ request.id }}"
          Overwrite: true
        outputs: {version: /Version}
"""


def aws_environments(tmp: Path, region: str, endpoint: str) -> Path:
    """An environments file whose `dev` calls the embedded AWS at `endpoint`, in `region`."""
    port = endpoint.rsplit(":", 1)[1]
    environments = tmp / "environments.yaml"
    environments.write_text(
        yaml.safe_dump({"dev": {"aws_region": region, "rest_allowed_hosts": [f"127.0.0.1:{port}"]}})
    )
    return environments


def spread(values: list[float]) -> str:
    if not values:
        return "no values"
    return (
        f"p50 {percentile(values, 50) * 1000:7.1f} ms  p99 {percentile(values, 99) * 1000:7.1f} ms"
        f"  mean {statistics.fmean(values) * 1000:7.1f} ms  (n={len(values)})"
    )


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Pao:
    """Submits requests through the gateway (signed, over aiohttp) and waits for them in the
    read model."""

    def __init__(self, http: aiohttp.ClientSession, url: str, completions: Completions) -> None:
        self.http = http
        self.url = url
        self.completions = completions
        self.target = Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
        self.failed: list[str] = []

    async def request(self) -> tuple[str, float]:
        """One request, submit to seen completed: its id and the client's seconds."""
        path = f"{self.url}/api/v1/requests"
        body = json.dumps({"item_id": ITEM, "inputs": {"name": uuid.uuid4().hex[:12]}}).encode()
        sent = time.perf_counter()
        headers = sign(
            self.target,
            "POST",
            path,
            body,
            {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
        )
        async with self.http.post(path, data=body, headers=headers) as answer:
            assert answer.status == 202, await answer.text()
            request_id = (await answer.json())["request_id"]
        status = await self.completions.ended(request_id)
        if status != "completed":
            self.failed.append(f"{request_id} {status}")
        return request_id, time.perf_counter() - sent

    async def store_seconds(self, request_ids: list[str]) -> list[float]:
        """finished_at - created_at of each completed request."""
        found = []
        for request_id in request_ids:
            detail = await call(self.url, "GET", f"/requests/{request_id}")
            if detail["status"] == "completed":
                found.append(epoch(detail["finished_at"]) - epoch(detail["created_at"]))
        return found


class Direct:
    """The floor: the same PutParameter, signed with botocore and sent with aiohttp."""

    def __init__(self, endpoint: str, credentials: Credentials, region: str) -> None:
        self.endpoint = endpoint
        self.signer = SigV4Auth(credentials, "ssm", region)
        self.session = aiohttp.ClientSession()

    async def call(self) -> float:
        body = json.dumps(
            {"Name": f"/floor/{uuid.uuid4().hex[:12]}", "Type": "String", "Value": "v"}
        )
        request = AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=body,
            headers={
                "X-Amz-Target": "AmazonSSM.PutParameter",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        started = time.perf_counter()
        self.signer.add_auth(request)
        async with self.session.post(
            request.url, data=body, headers=dict(request.headers.items())
        ) as answer:
            await answer.read()
            assert answer.status == 200, answer.status
        return time.perf_counter() - started

    async def close(self) -> None:
        await self.session.close()


async def at_once(count: int, in_flight: int, one) -> tuple[list, float]:
    """`count` calls of `one`, `in_flight` at a time: their results and the wall time."""
    left = count
    results: list = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            results.append(await one())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return results, time.perf_counter() - started


async def sustained(seconds: float, in_flight: int, one) -> tuple[int, float]:
    """As many calls of `one` as fit in `seconds`, `in_flight` at a time: how many ended in
    the window, and the window's length."""
    done = 0
    started = time.perf_counter()
    end = started + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await one()
            if time.perf_counter() <= end:
                done += 1

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return done, seconds


async def measure(args: argparse.Namespace, pao: Pao, direct: Direct) -> None:
    await pao.request()  # warm-up: connections, caches, the first STS-free signing
    print("1. one at a time")
    ids, client = [], []
    for _ in range(args.sequential):
        request_id, seconds = await pao.request()
        ids.append(request_id)
        client.append(seconds)
    floor = [await direct.call() for _ in range(args.sequential)]
    print(f"  PAO submit -> completed (store)   {spread(await pao.store_seconds(ids))}")
    print(f"  PAO submit -> seen completed      {spread(client)}")
    print(f"  floor: direct PutParameter        {spread(floor)}")

    print(f"2. {args.in_flight} at once, {args.concurrent} requests")
    results, wall = await at_once(args.concurrent, args.in_flight, pao.request)
    floor, floor_wall = await at_once(args.concurrent, args.in_flight, direct.call)
    stored = await pao.store_seconds([r[0] for r in results])
    print(f"  PAO submit -> completed (store)   {spread(stored)}")
    print(f"  PAO submit -> seen completed      {spread([r[1] for r in results])}")
    print(f"  PAO                               {len(results) / wall:7.1f} completed/s")
    print(f"  floor: direct PutParameter        {spread(floor)}")
    print(f"  floor                             {len(floor) / floor_wall:7.1f} calls/s")

    print(f"3. sustained for {args.seconds:.0f} s, {args.in_flight} in flight")
    done, window = await sustained(args.seconds, args.in_flight, pao.request)
    floor_done, floor_window = await sustained(args.seconds, args.in_flight, direct.call)
    print(f"  PAO    {done / window:7.1f} completed/s ({done} requests)")
    print(f"  floor  {floor_done / floor_window:7.1f} calls/s ({floor_done} calls)")
    if pao.failed:
        print(f"  {len(pao.failed)} request(s) did not complete, e.g. {pao.failed[:3]}")


async def main(args: argparse.Namespace) -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=128))
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        catalog = tmp / "catalog"
        shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
        (catalog / "security").mkdir()
        (catalog / "security" / f"{ITEM}.yaml").write_text(ITEM_TEXT)
        aws = EmbeddedAws(tmp)
        endpoint = await aws.start()
        try:
            identity = await aws.bootstrap(tmp / "aws")
            environments = aws_environments(tmp, identity.region, endpoint)
            credentials = identity.session().get_credentials()
            async with fresh_database() as dsn, broker() as bootstrap:
                processes = ServiceProcesses.configured(
                    tmp,
                    database_url=dsn,
                    kafka=bootstrap,
                    jira="http://127.0.0.1:9",
                    PAO_CATALOG_DIR=str(catalog),
                    PAO_ENVIRONMENTS_FILE=str(environments),
                    PAO_AWS_ENDPOINT_URL=endpoint,
                    PAO_LOG_LEVEL="warning",
                    PAO_FULFILLMENT_CONCURRENCY=str(max(8, args.in_flight)),
                    **identity.environ(),
                )
                processes.start("core", "gateway", "relay", "projector", "request")
                processes.start("worker", "fulfillment")
                direct = Direct(endpoint, credentials, identity.region)
                try:
                    await processes.ready()
                    pool = await create_pool(dsn, min_size=1, max_size=2, application_name="bench")
                    completions = Completions(pool)
                    connector = aiohttp.TCPConnector(limit=args.in_flight)
                    try:
                        async with aiohttp.ClientSession(connector=connector) as http:
                            pao = Pao(http, processes.gateway_url, completions)
                            await measure(args, pao, direct)
                    finally:
                        await completions.close()
                        await pool.close()
                finally:
                    await direct.close()
                    dead = [name for name, alive in processes.alive().items() if not alive]
                    await processes.stop_all()
                    if dead:
                        print(f"stopped early: {dead}\n{processes.logs(*dead, lines=10)}")
        finally:
            await aws.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequential", type=int, default=30, help="figure 1: requests")
    parser.add_argument("--in-flight", type=int, default=50, help="figures 2 and 3: at once")
    parser.add_argument("--concurrent", type=int, default=200, help="figure 2: requests")
    parser.add_argument("--seconds", type=float, default=60.0, help="figure 3: window")
    os.environ.setdefault("PAO_LOG_LEVEL", "warning")
    asyncio.run(main(parser.parse_args()))
