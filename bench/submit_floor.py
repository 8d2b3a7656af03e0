"""Submit path vs its floor: PAO's `POST /api/v1/requests` and a bare durable INSERT, one run.

    uv run python bench/submit_floor.py [--clients 100] [--count 3000] [--warmup 500]
                                        [--rounds 1]

The same client code (aiohttp, every request signed with SigV4 by devctl's `sign`, each with its
own Idempotency-Key) sends the same body to two servers, one after the other, on a fresh
database (and a broker, which the gateway's catalog view follows):

- PAO: `pao serve gateway`, its own process, as in production. The submit is validated against
  the item's form, its actions dry-rendered and its RequestSubmitted appended (with the
  Idempotency-Key's claim) before the 202; the consumers downstream are not part of that path.
- the floor: an aiohttp handler in its own process that reads the JSON body and INSERTs it as
  jsonb into a scratch table through an asyncpg pool of the gateway's size (commit durable, as
  PostgreSQL is configured), answering 202. No signature check, no validation, no idempotency.

For each: submits/s over --count submits after --warmup, p50 and p99 (POST sent -> 202 read), the
server process's CPU time per submit (user + system, from /proc: on a busy machine the steadier
figure), and PAO/floor. With --rounds N the two alternate N times.

With --gateways N, N `pao serve gateway` processes share the port (PAO_HTTP_REUSE_PORT), to use
every core; their CPU time is added up. With --with-services the rest of PAO runs too, as in
production, each service its own process (`pao serve relay projector`, `pao serve request`,
`pao serve fulfillment`): every submit is then also relayed, projected, dispatched and fulfilled
while the load runs, on the same cores.
No JIRA is configured, so each request's ticket step fails at once and the request ends failed:
the event work of a request is all there, the JIRA server's is not.
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from botocore.credentials import ReadOnlyCredentials

from infra import broker, fresh_database, percentile, serve_until_cancelled, stop_all, write_keys
from pao.contracts.topics import ALL_TOPICS
from pao.devctl.client import Target, sign
from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess
from pao.shared.kafka import ensure_topics
from pao.shared.settings import Settings

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
REPO = HERE.parent
KEY_ID, SECRET = "PAOBENCHKEY000000003", "bench-secret"
ITEM = "postgresql-rds"
INPUTS = {
    "db_name": "bench",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "bench@example.com",
}

# The floor, run as `python submit_floor.py --floor DSN PORT POOL`.
_FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS floor_submits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)
"""


async def serve_floor(dsn: str, port: int, pool_size: int) -> None:
    """The floor server: one durable jsonb INSERT per POST, then 202."""
    import asyncpg
    from aiohttp import web

    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    await pool.execute(_FLOOR_TABLE)

    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        row_id = await pool.fetchval(
            "INSERT INTO floor_submits (body) VALUES ($1::jsonb) RETURNING id", json.dumps(body)
        )
        return web.json_response({"request_id": str(row_id), "status": "submitted"}, status=202)

    try:
        await serve_until_cancelled({("POST", "/api/v1/requests"): submit}, port)
    finally:
        await pool.close()


@dataclass
class Load:
    """What one run of clients saw."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the server process's
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


def cpu_seconds(*processes: ChildProcess) -> float:
    """User + system CPU time the processes have used so far."""
    used = 0.0
    for process in processes:
        assert process.process is not None
        fields = Path(f"/proc/{process.process.pid}/stat").read_text().rpartition(")")[2].split()
        used += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


async def run_clients(http: aiohttp.ClientSession, url: str, clients: int, total: int) -> Load:
    """`clients` signed clients submitting back to back until `total` submits are answered."""
    target = Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None))
    path = f"{url}/api/v1/requests"
    body = json.dumps({"item_id": ITEM, "inputs": INPUTS}).encode()
    load = Load()
    remaining = total

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            headers = sign(
                target,
                "POST",
                path,
                body,
                {
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            )
            started = time.perf_counter()
            try:
                async with http.post(path, data=body, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                answer, status = type(exc).__name__.encode(), 0
            load.latencies.append((time.perf_counter() - started) * 1000)
            if status != 202:
                what = f"{status} {_error_text(answer)}"
                load.errors[what] = load.errors.get(what, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - started
    return load


def _error_text(answer: bytes) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        error = json.loads(answer)["error"]
        return f"{error['code']} {error['message']}"
    return answer[:80].decode(errors="replace")


async def ready(url: str, processes: list[ChildProcess]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if not all(p.running for p in processes):
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/api/v1/health/ready") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    tail = "\n".join(p.log_tail() for p in processes)
    raise RuntimeError(f"a server did not become ready:\n{tail}")


def service_env(dsn: str, bootstrap: str, tmp: Path, port: int) -> dict[str, str]:
    """The environment of each `pao serve` process of the benchmark's installation."""
    keys = write_keys(tmp, KEY_ID, SECRET)
    return {
        **os.environ,
        "PAO_DATABASE_URL": dsn,
        "PAO_KAFKA_BOOTSTRAP": bootstrap,
        "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "PAO_KEYS_FILE": str(keys),
        "PAO_HTTP_HOST": "127.0.0.1",
        "PAO_HTTP_PORT": str(port),
        "PAO_CATALOG_DIR": str(REPO / "catalog"),
        "PAO_DATA_DIR": str(tmp),
        "PAO_LOG_LEVEL": "warning",
    }


def start_gateways(
    dsn: str, bootstrap: str, tmp: Path, count: int
) -> tuple[list[ChildProcess], str]:
    """`count` gateway processes on one port (SO_REUSEPORT when more than one)."""
    port = free_port()
    env = service_env(dsn, bootstrap, tmp, port)
    if count > 1:
        env["PAO_HTTP_REUSE_PORT"] = "true"
    started = []
    for n in range(1, count + 1):
        process = ChildProcess(
            f"gateway-{n}",
            [str(BIN / "pao"), "serve", "gateway"],
            log_path=tmp / f"gateway-{n}.log",
            env=env,
        )
        process.start()
        started.append(process)
    return started, f"http://127.0.0.1:{port}"


#: The rest of PAO, in the production layout (--with-services).
SERVICES = {
    "relay-projector": ("relay", "projector"),
    "request": ("request",),
    "fulfillment": ("fulfillment",),
}


def start_services(dsn: str, bootstrap: str, tmp: Path) -> list[ChildProcess]:
    env = service_env(dsn, bootstrap, tmp, free_port())
    started = []
    for name, services in SERVICES.items():
        process = ChildProcess(
            name, [str(BIN / "pao"), "serve", *services], log_path=tmp / f"{name}.log", env=env
        )
        process.start()
        started.append(process)
    return started


def start_floor(dsn: str, tmp: Path, pool_size: int) -> tuple[ChildProcess, str]:
    port = free_port()
    process = ChildProcess(
        "floor",
        [sys.executable, str(Path(__file__).resolve()), "--floor", dsn, str(port), str(pool_size)],
        log_path=tmp / "floor.log",
        env=dict(os.environ),
    )
    process.start()
    return process, f"http://127.0.0.1:{port}"


def report(name: str, load: Load) -> float:
    rate = len(load.latencies) / load.seconds
    errors = sum(load.errors.values())
    cpu_ms = load.cpu_seconds * 1000 / len(load.latencies)
    print(
        f"  {name:<5} {rate:7,.0f} submits/s   p50 {percentile(load.latencies, 50):6.1f} ms   "
        f"p99 {percentile(load.latencies, 99):6.1f} ms   {cpu_ms:5.2f} CPU-ms/submit   "
        f"errors {errors}" + (f" {load.errors}" if errors else ""),
        flush=True,
    )
    return rate


async def main(
    clients: int, count: int, warmup: int, rounds: int, with_services: bool, gateways: int
) -> None:
    pool_size = Settings().db_pool_max
    with tempfile.TemporaryDirectory(prefix="pao-bench-") as tmp_name:
        tmp = Path(tmp_name)
        async with fresh_database() as dsn, broker() as bootstrap:
            # The topics the relay would create: the gateway's catalog view follows one.
            await ensure_topics(Settings(database_url=dsn, kafka_bootstrap=bootstrap), ALL_TOPICS)
            gateway, pao_url = start_gateways(dsn, bootstrap, tmp, gateways)
            floor, floor_url = start_floor(dsn, tmp, pool_size)
            others = start_services(dsn, bootstrap, tmp) if with_services else []
            try:
                await ready(pao_url, gateway)
                await ready(floor_url, [floor])
                connector = aiohttp.TCPConnector(limit=clients)
                async with aiohttp.ClientSession(connector=connector) as http:
                    print(
                        f"{clients} concurrent signed clients, {count:,} submits after "
                        f"{warmup:,} warm-up, floor pool {pool_size} connections, "
                        f"{gateways} gateway process(es)"
                        + (
                            f"; the rest of PAO running ({', '.join(SERVICES)})"
                            if with_services
                            else "; the gateway alone"
                        ),
                        flush=True,
                    )
                    for n in range(1, rounds + 1):
                        rates = {}
                        loads = {}
                        servers = (("PAO", pao_url, gateway), ("floor", floor_url, [floor]))
                        for name, url, processes in servers:
                            await run_clients(http, url, clients, warmup)
                            cpu_before = cpu_seconds(*processes)
                            loads[name] = await run_clients(http, url, clients, count)
                            loads[name].cpu_seconds = cpu_seconds(*processes) - cpu_before
                        print(f"round {n}:")
                        for name, load in loads.items():
                            rates[name] = report(name, load)
                        p99 = {k: percentile(v.latencies, 99) for k, v in loads.items()}
                        cpu = {k: v.cpu_seconds / len(v.latencies) for k, v in loads.items()}
                        print(
                            f"  PAO/floor: {rates['PAO'] / rates['floor']:.2f} of the throughput, "
                            f"p99 x{p99['PAO'] / p99['floor']:.1f}, "
                            f"CPU per submit x{cpu['PAO'] / cpu['floor']:.1f}",
                            flush=True,
                        )
            finally:
                await stop_all((*gateway, floor, *others))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--floor":
        asyncio.run(serve_floor(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--count", type=int, default=3_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--with-services",
        action="store_true",
        help="run the relay, projector, request and fulfillment services too",
    )
    parser.add_argument(
        "--gateways", type=int, default=1, help="gateway processes sharing the port"
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.clients, args.count, args.warmup, args.rounds, args.with_services, args.gateways)
    )
