"""Resources through `pao up` and devctl, with real Terraform and a real PostgreSQL server: a
database is created, changed in place and dropped; production needs the data team's approval,
never the requester's, and nothing is applied before it."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from support.upstack import Person, UpStack, pao_up, portal_session

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(
        shutil.which("terraform") is None or shutil.which("psql") is None,
        reason="needs terraform and psql",
    ),
]

APPROVER = Person(
    "approver", "omar", ("team-data",), "PAOAPPROVERKEY000001", "approver-secret-for-tests"
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UpStack]:
    async with pao_up(tmp_path_factory.mktemp("pao-resources"), people=(APPROVER,)) as up:
        yield up


def devctl(stack: UpStack, *args: str, profile: str = "local") -> Any:
    return stack.devctl(*args, profile=profile)


def json_of(done: subprocess.CompletedProcess[str], stack: UpStack) -> Any:
    assert done.returncode == 0, f"{done.stderr}\n{stack.log_tail()}"
    return json.loads(done.stdout)


async def database(stack: UpStack, name: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(stack.info["database"])
    try:
        return await conn.fetchrow(
            "SELECT d.oid, d.datconnlimit, r.rolname AS owner FROM pg_database d "
            "JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1",
            name,
        )
    finally:
        await conn.close()


def submit(stack: UpStack, db_name: str, environment: str, *extra: str) -> dict[str, Any]:
    return json_of(
        devctl(
            stack,
            "-o",
            "json",
            "request",
            "submit",
            "postgresql-standard",
            "--set",
            f"db_name={db_name}",
            "--set",
            f"environment={environment}",
            "--set",
            "owner_email=shop@example.com",
            *extra,
        ),
        stack,
    )


async def status(stack: UpStack, request_id: str, wanted: str) -> dict:
    return await stack.status(request_id, wanted)


async def test_a_database_is_created_changed_in_place_and_dropped(stack: UpStack) -> None:
    name = f"shop_{uuid.uuid4().hex[:8]}"
    created = submit(stack, name, "dev", "--set", "connection_limit=25", "--wait")
    assert created["status"] == "completed", created
    request = json_of(devctl(stack, "-o", "json", "request", "get", created["request_id"]), stack)
    assert request["kind"] == "create"
    resource_id = request["resource_id"]
    made = await database(stack, name)
    assert made is not None
    assert made["datconnlimit"] == 25
    resource = json_of(devctl(stack, "-o", "json", "resource", "get", resource_id), stack)
    assert resource["state"] == "active"
    assert resource["outputs"]["database"]["database"] == name
    assert [r["kind"] for r in resource["requests"]] == ["create"]
    logs = devctl(stack, "-o", "json", "request", "logs", created["request_id"])
    assert logs.returncode == 0, logs.stderr
    entries = [json.loads(line) for line in logs.stdout.splitlines() if line.strip()]
    terraform_lines = [e for e in entries if e["event_type"] == "ActionLogged"]
    assert any("Creation complete" in e["message"] for e in terraform_lines), terraform_lines

    updated = json_of(
        devctl(
            stack,
            "-o",
            "json",
            "resource",
            "update",
            resource_id,
            "--set",
            "connection_limit=7",
            "--yes",
            "--wait",
        ),
        stack,
    )
    assert updated["status"] == "completed", updated
    changed = await database(stack, name)
    assert changed is not None
    assert (changed["oid"], changed["datconnlimit"]) == (made["oid"], 7)
    plans = json_of(devctl(stack, "-o", "json", "terraform", "plan", updated["request_id"]), stack)
    assert plans["plans"][-1]["state"] == "applied"
    assert not any(c["action"] == "delete" for c in plans["plans"][-1]["changes"])

    # The portal shows the same: the resource with its update form filled in, and the plan.
    portal = stack.info["gateway"] + "/portal"
    async with portal_session(stack, "local") as (browser, _):
        async with browser.get(f"{portal}/resources") as page:
            assert page.status == 200
            assert resource_id in await page.text()
        form = f"{portal}/catalog/postgresql-standard/request?resource_id={resource_id}"
        async with browser.get(form) as page:
            assert page.status == 200
            assert '"connection_limit": 7' in await page.text()
        async with browser.get(f"{portal}/requests/{updated['request_id']}") as page:
            assert page.status == 200
            shown = await page.text()
        assert "Terraform plan for <strong>database</strong>" in shown
        plan = shown[shown.index("Terraform plan for") :][:1500]
        assert "1 to replace, 0 to destroy" in plan, plan
        assert "&#34;connection_limit&#34;: 7" in plan, plan
        assert '<th scope="col">before</th>' in shown

    gone = json_of(
        devctl(
            stack,
            "-o",
            "json",
            "resource",
            "decommission",
            resource_id,
            "--reason",
            "the shop moved",
            "--yes",
            "--wait",
        ),
        stack,
    )
    assert gone["status"] == "completed", gone
    assert await database(stack, name) is None
    resource = json_of(devctl(stack, "-o", "json", "resource", "get", resource_id), stack)
    assert resource["state"] == "decommissioned"
    assert [r["kind"] for r in resource["requests"]] == ["create", "update", "decommission"]
    refused = devctl(
        stack, "resource", "update", resource_id, "--set", "connection_limit=9", "--yes"
    )
    assert refused.returncode != 0
    assert "PAO-RES-002" in refused.stderr


async def test_production_waits_for_the_data_team_and_a_rejection_ends_it(stack: UpStack) -> None:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    submitted = submit(stack, name, "prod", "--set", "connection_limit=20")
    request_id = submitted["request_id"]
    await status(stack, request_id, "awaiting_approval")
    assert await database(stack, name) is None  # planned, not applied

    own = devctl(stack, "request", "approve", request_id)
    assert own.returncode != 0
    assert "PAO-REQ-004" in own.stderr

    waiting = json_of(devctl(stack, "-o", "json", "approvals", "list", profile="approver"), stack)
    mine = [a for a in waiting["approvals"] if a["request_id"] == request_id]
    assert mine
    assert mine[0]["plan"]["counts"]["add"] >= 1
    approved = devctl(
        stack, "terraform", "apply", request_id, "--comment", "ok", "--yes", profile="approver"
    )
    assert approved.returncode == 0, approved.stderr
    await status(stack, request_id, "completed")
    assert await database(stack, name) is not None
    detail = json_of(devctl(stack, "-o", "json", "request", "get", request_id), stack)
    assert detail["approval"]["decisions"][0]["by"] == "omar"

    other = f"orders_{uuid.uuid4().hex[:8]}"
    rejected_id = submit(stack, other, "prod", "--set", "connection_limit=20")["request_id"]
    await status(stack, rejected_id, "awaiting_approval")
    # The approver rejects it in the portal: the page shows the plan, the form posts the
    # decision with the session's CSRF token.
    async with portal_session(stack, "approver") as (browser, csrf):
        async with browser.get(stack.info["gateway"] + "/portal/approvals") as page:
            assert page.status == 200
            shown = await page.text()
        assert rejected_id in shown
        assert "Terraform plan for <strong>database</strong>" in shown
        reject = f"{stack.info['gateway']}/api/v1/requests/{rejected_id}/reject"
        async with browser.post(
            reject, json={"comment": "use the shared one"}, headers={"X-CSRF-Token": csrf}
        ) as answer:
            assert answer.status == 202, await answer.text()
    ended = await status(stack, rejected_id, "failed")
    assert "use the shared one" in ended["last_error"]
    assert await database(stack, other) is None
