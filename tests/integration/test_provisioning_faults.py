"""Terraform actions under faults, with `pao serve` processes, real Terraform and a real server:
a worker killed during apply, an abort during apply, and a plan that went stale between its
approval and its apply; and a resource that expires.

The catalog is the repository's, with postgresql-standard's module made slow (a pause after the
database exists) so that a kill or an abort lands while Terraform applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
import pytest
import pytest_asyncio
import yaml
from botocore.credentials import ReadOnlyCredentials

from conftest import REPO, fresh_database
from pao.devctl.client import PaoClient, Target
from pao.devstack.broker import EmbeddedBroker
from pao.fulfillment.terraform import TerraformRunner, schema_for
from support import eventually
from support.processes import ServiceProcesses, call

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        shutil.which("terraform") is None or shutil.which("psql") is None,
        reason="needs terraform and psql",
    ),
]

DATA_KEY, DATA_SECRET = "PAODATATEAMKEY000001", "data-team-secret"
PAUSE_SECONDS = 8
SLOW = f"""
# After the database exists, a pause: a test stops the worker while Terraform applies.
resource "terraform_data" "pause" {{
  depends_on = [terraform_data.settings]
  provisioner "local-exec" {{
    command = "sleep {PAUSE_SECONDS}"
  }}
}}
"""


@dataclass
class Platform:
    procs: ServiceProcesses
    dsn: str
    admin_url: str


def slow_catalog(tmp: Path) -> Path:
    catalog = tmp / "catalog"
    shutil.copytree(REPO / "catalog", catalog, ignore=shutil.ignore_patterns(".terraform"))
    (catalog / "modules" / "postgresql" / "pause.tf").write_text(SLOW)
    return catalog


def admin_url_of(dsn: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, "/postgres", "", ""))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory, jira_url: str
) -> AsyncIterator[Platform]:
    tmp = tmp_path_factory.mktemp("provisioning")
    broker = EmbeddedBroker(tmp / "broker")
    await broker.start()
    try:
        async with fresh_database(postgres_server) as dsn:
            admin_url = admin_url_of(dsn)
            environments = tmp / "environments.yaml"
            environments.write_text(
                yaml.safe_dump({e: {"postgres_admin_url": admin_url} for e in ("dev", "prod")})
            )
            procs = ServiceProcesses.configured(
                tmp,
                database_url=dsn,
                kafka=broker.bootstrap,
                jira=jira_url,
                PAO_CATALOG_DIR=str(slow_catalog(tmp)),
                PAO_ENVIRONMENTS_FILE=str(environments),
                PAO_FULFILLMENT_LEASE_SECONDS="3",
                PAO_RESOURCE_EXPIRY_CHECK_SECONDS="1",
                PAO_RESOURCE_EXPIRY_NOTICE_SECONDS="3600",
                more_keys=(
                    {
                        "access_key_id": DATA_KEY,
                        "secret_access_key": DATA_SECRET,
                        "user": "omar",
                        "teams": ["team-data"],
                    },
                ),
            )
            procs.start("core", "gateway", "relay", "projector", "request")
            procs.start("worker", "fulfillment")
            try:
                await procs.ready()
                yield Platform(procs, dsn, admin_url)
            finally:
                await procs.stop_all()
    finally:
        await broker.stop()


async def submit(platform: Platform, db_name: str, environment: str = "dev", **extra: Any) -> str:
    answer = await call(
        platform.procs.gateway_url,
        "POST",
        "/requests",
        body={
            "item_id": "postgresql-standard",
            "inputs": {
                "db_name": db_name,
                "environment": environment,
                "connection_limit": 20,
                "owner_email": "shop@example.com",
            },
            **extra,
        },
        extra_headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    return answer["request_id"]


async def request_of(platform: Platform, request_id: str) -> dict[str, Any]:
    return await call(platform.procs.gateway_url, "GET", f"/requests/{request_id}")


async def becomes(platform: Platform, request_id: str, status: str, timeout: float = 90) -> dict:
    async def probe() -> dict | None:
        found = await request_of(platform, request_id)
        return found if found["status"] == status else None

    return await eventually(probe, timeout=timeout, interval=0.3, what=f"{request_id} {status}")


async def pausing(platform: Platform, request_id: str) -> None:
    """Until Terraform is in the pause, with the database made."""

    async def probe() -> bool:
        answer = await call(platform.procs.gateway_url, "GET", f"/requests/{request_id}/logs")
        return any(
            e["event_type"] == "ActionLogged" and "terraform_data.pause: Creating" in e["message"]
            for e in answer["entries"]
        )

    await eventually(probe, timeout=90, interval=0.2, what="terraform to reach the pause")


async def databases_named(platform: Platform, name: str) -> int:
    conn = await asyncpg.connect(platform.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def runner(platform: Platform, tmp: Path) -> TerraformRunner:
    return TerraformRunner(work_root=tmp / "work", state_dsn=platform.dsn, timeout=120)


def terraform_processes() -> list[psutil.Process]:
    """The Terraform processes this test session started (through its workers), not those of
    another session or test worker on the machine."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.name() == "terraform":
                found.append(process)
    return found


async def test_a_worker_killed_during_apply_is_finished_by_the_next_without_a_second_create(
    platform: Platform, tmp_path: Path
) -> None:
    name = f"killed_{uuid.uuid4().hex[:8]}"
    request_id = await submit(platform, name)
    await pausing(platform, request_id)
    await platform.procs.processes["worker"].kill()
    assert await databases_named(platform, name) == 1
    platform.procs.start("worker", "fulfillment")  # a new worker on the same queue
    done = await becomes(platform, request_id, "completed", timeout=120)
    assert await databases_named(platform, name) == 1
    workspace = f"res-{done['resource_id']}-database"
    assert await runner(platform, tmp_path).lock_holders(workspace) == []
    state = await stored_state(platform, workspace)
    addresses = [f"{r['type']}.{r['name']}" for r in state["resources"]]
    assert addresses.count("terraform_data.database") == 1
    assert "terraform_data.pause" in addresses  # the apply was finished, not started over


async def stored_state(platform: Platform, workspace: str) -> dict[str, Any]:
    conn = await asyncpg.connect(platform.dsn)
    try:
        raw = await conn.fetchval(
            f"SELECT data FROM {schema_for(workspace)}.states WHERE name = 'default'"
        )
    finally:
        await conn.close()
    return json.loads(raw)


async def test_an_abort_during_apply_stops_terraform_and_marks_the_resource(
    platform: Platform,
) -> None:
    name = f"aborted_{uuid.uuid4().hex[:8]}"
    request_id = await submit(platform, name)
    await pausing(platform, request_id)
    await call(
        platform.procs.gateway_url,
        "POST",
        f"/requests/{request_id}/abort",
        body={"reason": "wrong server"},
    )
    found = await becomes(platform, request_id, "aborted")

    async def stopped() -> bool:
        return not terraform_processes()

    await eventually(stopped, timeout=PAUSE_SECONDS, what="terraform to stop")
    resource_id = found["resource_id"]

    async def marked() -> dict | None:
        resource = await call(platform.procs.gateway_url, "GET", f"/resources/{resource_id}")
        return resource if resource["state"] == "failed" else None

    resource = await eventually(marked, timeout=30, what="the resource to be marked")
    assert "wrong server" in resource["note"]
    assert await plan_files_kept(platform, request_id) == 0  # they hold variable values


async def test_a_plan_gone_stale_after_its_approval_is_planned_and_approved_again(
    platform: Platform, tmp_path: Path
) -> None:
    name = f"stale_{uuid.uuid4().hex[:8]}"
    request_id = await submit(platform, name, environment="prod")
    waiting = await becomes(platform, request_id, "awaiting_approval")
    first_plan = waiting["approval"]["plan_id"]
    # Someone else changes the workspace's state meanwhile (the same database, made by hand).
    workspace = f"res-{waiting['resource_id']}-database"
    module = REPO / "catalog" / "modules" / "postgresql"
    tf = runner(platform, tmp_path)
    moved = await tf.plan(
        module,
        {"admin_url": platform.admin_url, "db_name": name, "connection_limit": 5},
        workspace=workspace,
    )
    await tf.apply_plan(module, moved.plan_file, workspace=workspace)

    approver = await approve_as_data_team(platform, request_id, first_plan)
    assert approver["status"] in ("in_progress", "awaiting_approval")
    again = await becomes(platform, request_id, "awaiting_approval")
    assert again["approval"]["plan_id"] != first_plan
    plans = (await call(platform.procs.gateway_url, "GET", f"/requests/{request_id}/plan"))["plans"]
    assert [p["state"] for p in plans] == ["stale", "awaiting_approval"]
    await approve_as_data_team(platform, request_id, again["approval"]["plan_id"])
    await becomes(platform, request_id, "completed")
    assert await databases_named(platform, name) == 1
    assert await plan_files_kept(platform, request_id) == 0


async def plan_files_kept(platform: Platform, request_id: str) -> int:
    """Stored plan files of the request (they hold its variable values) not yet forgotten."""

    async def count() -> int:
        conn = await asyncpg.connect(platform.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM terraform_plans WHERE request_id = $1 "
                    "AND plan_file IS NOT NULL",
                    request_id,
                )
            )
        finally:
            await conn.close()

    async def none_left() -> bool:
        return await count() == 0

    try:  # fulfilment hears of the end a moment after the request records it
        await eventually(none_left, timeout=10, what="plan files to be forgotten")
    except AssertionError:
        pass
    return await count()


async def approve_as_data_team(platform: Platform, request_id: str, plan_id: str) -> Any:
    api = PaoClient(
        Target(
            platform.procs.gateway_url,
            "us-east-1",
            ReadOnlyCredentials(DATA_KEY, DATA_SECRET, None),
        )
    )
    try:
        return await asyncio.to_thread(
            api.request,
            "POST",
            f"/requests/{request_id}/approve",
            body={"comment": "reviewed", "plan_id": plan_id},
        )
    finally:
        api.close()


async def test_an_expired_resource_is_noticed_then_decommissioned_by_pao(
    platform: Platform,
) -> None:
    name = f"expiring_{uuid.uuid4().hex[:8]}"
    soon = (datetime.now(UTC) + timedelta(seconds=25)).isoformat()
    request_id = await submit(platform, name, expires_at=soon)
    made = await becomes(platform, request_id, "completed")
    assert await databases_named(platform, name) == 1
    resource_id = made["resource_id"]

    async def gone() -> dict | None:
        resource = await call(platform.procs.gateway_url, "GET", f"/resources/{resource_id}")
        return resource if resource["state"] == "decommissioned" else None

    resource = await eventually(gone, timeout=120, interval=0.5, what="the expiry to end it")
    assert [r["kind"] for r in resource["requests"]] == ["create", "decommission"]
    assert resource["requests"][-1]["requester"] == "pao"
    assert await databases_named(platform, name) == 0
    conn = await asyncpg.connect(platform.dsn)
    try:
        kinds = [
            r["event_type"]
            for r in await conn.fetch(
                "SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version",
                f"resource-{resource_id}",
            )
        ]
    finally:
        await conn.close()
    assert kinds.index("ResourceExpiring") < kinds.index("ResourceDecommissioning")
