"""`GET /api/v1/catalog` under load: throughput and latency at 100 concurrent signed clients.

    uv run python bench/catalog_api.py [--clients 100] [--seconds 10]

The gateway runs as its own process (`pao serve gateway`, the repository's catalog); this process
is the load generator. Every request carries a SigV4 signature that the gateway verifies in full;
each client signs its request once a minute and resends it (signing is the client's cost, not the
server's, and a 2-core machine has none to spare).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from botocore.credentials import ReadOnlyCredentials

from infra import broker, fresh_database, percentile
from pao.devctl.client import Target, sign
from pao.devstack.ports import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
KEY_ID, SECRET = "PAOBENCHKEY000000001", "bench-secret"


async def start_gateway(
    dsn: str, bootstrap: str, tmp: Path
) -> tuple[asyncio.subprocess.Process, str]:
    keys = tmp / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            [
                {
                    "access_key_id": KEY_ID,
                    "secret_access_key": SECRET,
                    "user": "bench",
                    "roles": ["admin"],
                }
            ]
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "PAO_DATABASE_URL": dsn,
        "PAO_KAFKA_BOOTSTRAP": bootstrap,
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_KEYS_FILE": str(keys),
        "PAO_HTTP_PORT": str(port),
        "PAO_CATALOG_DIR": str(REPO / "catalog"),
        "PAO_LOG_LEVEL": "info",
        "PAO_DATA_DIR": str(tmp),
    }
    # The gateway logs every request (JSON, info level, as in production) to a file.
    log = (tmp / "gateway.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "pao"), "serve", "gateway", env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{url}/api/v1/health/ready") as r:
                    if r.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


async def load(url: str, clients: int, seconds: float) -> tuple[int, list[float], int]:
    target = Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
    path = f"{url}/api/v1/catalog"
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        signed_at, headers = 0.0, {}
        while time.perf_counter() < deadline:
            if time.perf_counter() - signed_at > 60:
                headers = sign(target, "GET", path, b"", {"Accept": "application/json"})
                signed_at = time.perf_counter()
            started = time.perf_counter()
            async with http.get(path, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return len(latencies), latencies, errors


async def main(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp:
        async with fresh_database() as dsn, broker() as bootstrap:
            gateway, url = await start_gateway(dsn, bootstrap, Path(tmp))
            try:
                await load(url, clients, 2)  # warm up
                count, latencies, errors = await load(url, clients, seconds)
            finally:
                gateway.terminate()
                await gateway.wait()
    print(
        f"GET /api/v1/catalog, {clients} concurrent signed clients, {seconds:.0f} s: "
        f"{count / seconds:,.0f} requests/s, p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms, errors {errors}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.seconds))
