"""PAO services as separate `pao serve` processes, as they run in production, and a load of
requests driven through the gateway like a client that retries what the platform refuses for the
moment (503s, dropped connections), always with the same Idempotency-Key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pao.contracts.errors import GATEWAY_UNREACHABLE
from pao.devctl.errors import CliError
from pao.devstack.ports import free_port
from pao.devstack.processes import ChildProcess

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
KEY_ID, SECRET = "PAOPROCKEY0000000001", "processes-secret"


@dataclass
class ServiceProcesses:
    """`pao serve` processes sharing one environment; each is named by what it runs."""

    tmp: Path
    env: dict[str, str]
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    gateway_url: str = ""

    @classmethod
    def configured(
        cls,
        tmp: Path,
        *,
        database_url: str,
        kafka: str,
        jira: str,
        more_keys: tuple[dict[str, Any], ...] = (),
        **extra: str,
    ) -> ServiceProcesses:
        keys = tmp / "keys.yaml"
        keys.write_text(
            yaml.safe_dump(
                [
                    {
                        "access_key_id": KEY_ID,
                        "secret_access_key": SECRET,
                        "user": "dana",
                        "email": "dana@example.com",
                        "teams": ["payments"],
                        "roles": ["admin"],
                    },
                    *more_keys,
                ]
            )
        )
        env = {
            **os.environ,
            "PAO_DATABASE_URL": database_url,
            "PAO_KAFKA_BOOTSTRAP": kafka,
            "PAO_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "PAO_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "PAO_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "PAO_KAFKA_REBALANCE_TIMEOUT_MS": "6000",
            "PAO_JIRA_URL": jira,
            "PAO_JIRA_POLL_SECONDS": "0.3",
            "PAO_BREAKER_SECONDS": "2",
            "PAO_FULFILLMENT_LEASE_SECONDS": "4",
            "PAO_KEYS_FILE": str(keys),
            "PAO_CATALOG_DIR": str(REPO / "catalog"),
            "PAO_DATA_DIR": str(tmp / "state"),
            "PAO_LOG_FORMAT": "json",
            "PAO_RELAY_NAME": f"test-{uuid.uuid4().hex[:8]}",
            **extra,
        }
        return cls(tmp, env)

    def start(self, name: str, *services: str, env: Mapping[str, str] | None = None) -> None:
        """Start `pao serve SERVICES...` as the process `name`."""
        environment = {**self.env, **(env or {})}
        if "gateway" in services:
            port = free_port()
            environment["PAO_HTTP_PORT"] = str(port)
            self.gateway_url = f"http://127.0.0.1:{port}"
        process = ChildProcess(
            name,
            [str(BIN / "pao"), "serve", *services],
            log_path=self.tmp / f"{name}.log",
            env=environment,
        )
        process.start()
        self.processes[name] = process

    async def ready(self, timeout: float = 60.0) -> None:
        """Wait until the gateway says every dependency answers."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                dead = [n for n, p in self.processes.items() if not p.running]
                assert not dead, f"{dead} exited at start:\n" + self.logs(*dead)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.gateway_url}/api/v1/health/ready") as answer:
                        if answer.status == 200:
                            return
                assert asyncio.get_running_loop().time() < deadline, "the gateway never got ready"
                await asyncio.sleep(0.2)

    def alive(self) -> dict[str, bool]:
        return {name: process.running for name, process in self.processes.items()}

    def logs(self, *names: str, lines: int = 40) -> str:
        return "\n".join(
            f"--- {n}\n{self.processes[n].log_tail(lines)}" for n in names or self.processes
        )

    def logged(self, text: str, *names: str) -> list[str]:
        """Processes (of `names`, or all) whose log mentions `text`."""
        return [
            name
            for name, process in self.processes.items()
            if (not names or name in names) and text in process.log_path.read_text(errors="replace")
        ]

    async def stop_all(self) -> None:
        for process in self.processes.values():
            await process.stop(timeout=30)


def client(url: str) -> Any:
    from botocore.credentials import ReadOnlyCredentials

    from pao.devctl.client import PaoClient, Target

    return PaoClient(Target(url, "us-east-1", ReadOnlyCredentials(KEY_ID, SECRET, None)))


async def call(url: str, method: str, path: str, **kwargs: Any) -> Any:
    """One signed call, retried while the platform answers 503 or drops the connection; the
    503s are counted in `refusals` when given."""
    refusals: list[str] | None = kwargs.pop("refusals", None)
    for _ in range(600):
        api = client(url)
        try:
            return await asyncio.to_thread(api.request, method, path, **kwargs)
        except CliError as exc:
            if exc.status not in (502, 503, 504) and exc.code != GATEWAY_UNREACHABLE.code:
                raise
            if refusals is not None:
                refusals.append(f"{exc.status} {exc.code}")
        finally:
            api.close()
        await asyncio.sleep(0.25)
    raise AssertionError(f"{method} {path} kept failing")


POSTGRES = {
    "db_name": "orders",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "orders@example.com",
}


async def submit_many(
    url: str, count: int, *, refusals: list[str] | None = None, first: int = 0
) -> list[str]:
    """`count` requests for postgresql-rds, each with its own Idempotency-Key."""
    ids = []
    for n in range(first, first + count):
        answer = await call(
            url,
            "POST",
            "/requests",
            body={"item_id": "postgresql-rds", "inputs": {**POSTGRES, "db_name": f"db{n}"}},
            extra_headers={"Idempotency-Key": f"load-{n}"},
            refusals=refusals,
        )
        ids.append(answer["request_id"])
    return ids


async def raw_get(url: str, path: str) -> tuple[int, dict[str, str], Any]:
    """A signed GET whose status and headers are kept (Retry-After, say)."""
    import httpx

    from pao.devctl.client import sign

    api = client(url)
    target = f"{url}/api/v1{path}"
    headers = sign(api.target, "GET", target, b"", {"X-Correlation-ID": str(uuid.uuid4())})
    api.close()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(target, headers=headers)
    return answer.status_code, dict(answer.headers), answer.json()
