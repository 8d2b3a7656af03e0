"""Requests end to end in one process: submit, JIRA fulfilment, status, logs, retry, abort,
escalate, authorisation. The JIRA server is real (jira820 over HTTP), driven like a person would."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
import pytest_asyncio

from conftest import REPO, fresh_database, signed_client
from pao.devctl.client import sign
from pao.devctl.errors import CliError
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("gateway", "relay", "projector", "request", "fulfillment")
EKS = {
    "app_name": "orders-api",
    "environment": "prod",
    "cost_center": "CC-1042",
    "replicas": 3,
    "container_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/orders:1.4.2",
    "ingress_enabled": True,
    "hostname": "orders.example.com",
}
POSTGRES = {
    "db_name": "orders",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "orders@example.com",
}


@pytest.fixture(scope="module")
def people(keys: KeyStore) -> KeyStore:
    """The session's keys plus a developer of another team."""
    return KeyStore(
        [
            keys.get("PAOTESTKEY0000000001"),
            keys.get("PAOADMINKEY000000001"),
            KeyEntry(
                access_key_id="PAOOTHERKEY000000001",
                secret_access_key="other",
                user="olga",
                teams=("team-growth",),
            ),
        ]
    )  # type: ignore[list-item]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    people: KeyStore,
    jira_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": REPO / "catalog",
                "breaker_seconds": 2.0,
            }
        )
        async with running_stack(
            own, people, services=SERVICES, data_dir=tmp_path_factory.mktemp("stack")
        ) as running:
            yield running


@pytest_asyncio.fixture(loop_scope="session")
async def jira(jira_url: str) -> AsyncIterator[JiraClient]:
    async with aiohttp.ClientSession() as session:
        yield JiraClient(jira_url, session=session)


async def api(stack: Stack, method: str, path: str, *, who: str = "dana", **kwargs: Any) -> Any:
    key, secret = {
        "dana": ("PAOTESTKEY0000000001", "integration-secret"),
        "admin": ("PAOADMINKEY000000001", "admin-secret"),
        "olga": ("PAOOTHERKEY000000001", "other"),
    }[who]
    client = signed_client(stack.url, key, secret)
    try:
        return await asyncio.to_thread(client.request, method, path, **kwargs)
    finally:
        client.close()


async def status_becomes(stack: Stack, request_id: str, *wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        current = await api(stack, "GET", f"/requests/{request_id}/status")
        return current if current["status"] in wanted else None

    return await eventually(probe, timeout=90, what=f"status {' or '.join(wanted)}")


async def submit(stack: Stack, item: str, inputs: dict[str, Any], **kwargs: Any) -> str:
    answer = await api(
        stack, "POST", "/requests", body={"item_id": item, "inputs": inputs}, **kwargs
    )
    assert answer["status"] == "submitted"
    return answer["request_id"]


async def test_a_request_opens_a_ticket_and_completes_when_it_is_done(
    stack: Stack, jira: JiraClient
) -> None:
    # The compute team's onboarding ticket: the item's manual mode, chosen by the requester.
    answer = await api(
        stack,
        "POST",
        "/requests",
        body={"item_id": "eks-application", "inputs": EKS, "mode": "manual"},
    )
    request_id = answer["request_id"]
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    assert waiting["actions"][0]["name"] == "manual"
    outputs = waiting["actions"][0]["outputs"]
    issue = await jira.get_issue(outputs["key"])
    assert issue.summary == "EKS application orders-api in prod"
    assert issue.priority == "High"
    assert "https://orders.example.com" in (issue.description or "")
    assert outputs["url"] == issue.url
    assert "pao" in issue.labels

    await jira.transition_to(issue.key, "Done")
    done = await status_becomes(stack, request_id, "completed")
    assert done["actions"][0]["status"] == "succeeded"
    assert done["actions"][0]["outputs"]["key"] == issue.key

    full = await api(stack, "GET", f"/requests/{request_id}")
    assert full["item_version"] == "2.0.0"
    assert full["mode"] == "manual"
    assert full["inputs"]["cpu"] == "500m"  # defaults are pinned with the request
    logs = await api(stack, "GET", f"/requests/{request_id}/logs")
    kinds = [e["event_type"] for e in logs["entries"]]
    assert kinds == [
        "RequestSubmitted",
        "ActionStarted",
        "ActionAwaitingManual",
        "ActionSucceeded",
        "RequestCompleted",
    ]
    listed = await api(stack, "GET", "/requests", params={"item_id": "eks-application"})
    assert request_id in [r["request_id"] for r in listed["requests"]]


async def test_invalid_inputs_get_every_problem_and_store_nothing(stack: Stack) -> None:
    # Submits only: the earlier test's request may still be finishing in the background.
    submitted = "SELECT count(*) FROM events WHERE event_type = 'RequestSubmitted'"
    claims = "SELECT count(*) FROM submit_idempotency"
    before = await stack.pool.fetchval(submitted), await stack.pool.fetchval(claims)
    with pytest.raises(CliError) as caught:
        await submit(
            stack,
            "postgresql-rds",
            {**POSTGRES, "environment": "prod", "instance_size": "huge"},
        )
    assert caught.value.status == 422
    fields = {d["field"] for d in caught.value.details}
    assert fields == {"/inputs/instance_size", "/inputs/multi_az"}
    assert (await stack.pool.fetchval(submitted), await stack.pool.fetchval(claims)) == before


async def test_a_repeated_submit_with_the_same_key_returns_the_first_request(
    stack: Stack,
) -> None:
    headers = {"Idempotency-Key": "order-db-2026-11-26"}
    first = await submit(stack, "postgresql-rds", POSTGRES, extra_headers=headers)
    again = await submit(stack, "postgresql-rds", POSTGRES, extra_headers=headers)
    assert again == first
    with pytest.raises(CliError) as caught:
        await submit(
            stack, "postgresql-rds", {**POSTGRES, "db_name": "other"}, extra_headers=headers
        )
    assert caught.value.code == "PAO-REQ-003"


async def test_abort_mid_flight_stops_the_request_and_tells_the_ticket(
    stack: Stack, jira: JiraClient
) -> None:
    request_id = await submit(stack, "postgresql-rds", POSTGRES)
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    key = waiting["actions"][0]["outputs"]["key"]
    answer = await api(
        stack, "POST", f"/requests/{request_id}/abort", body={"reason": "wrong database size"}
    )
    assert answer["status"] == "aborted"
    await status_becomes(stack, request_id, "aborted")

    async def commented() -> bool:
        return any("wrong database size" in c for c in await jira.comments(key))

    await eventually(commented, what="the abort comment on the ticket")
    with pytest.raises(CliError) as caught:
        await api(stack, "POST", f"/requests/{request_id}/abort", body={})
    assert caught.value.code == "PAO-REQ-002"


async def test_a_rejected_ticket_fails_the_request_and_a_retry_opens_a_new_one(
    stack: Stack, jira: JiraClient
) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "ledger"})
    first = (await status_becomes(stack, request_id, "awaiting_manual"))["actions"][0]
    await jira.transition_to(first["outputs"]["key"], "Rejected")
    failed = await status_becomes(stack, request_id, "failed")
    assert "Rejected" in failed["actions"][0]["error"]

    retried = await api(stack, "POST", f"/requests/{request_id}/retry", body={})
    assert retried["retried"] == ["create_ticket"]

    async def new_ticket() -> str | None:
        current = await api(stack, "GET", f"/requests/{request_id}/status")
        key = current["actions"][0]["outputs"].get("key")
        return (
            key
            if current["status"] == "awaiting_manual" and key != first["outputs"]["key"]
            else None
        )

    second = await eventually(new_ticket, what="a new ticket after the retry")
    await jira.transition_to(second, "Done")
    await status_becomes(stack, request_id, "completed")


async def test_escalation_raises_the_ticket_priority_and_keeps_history(
    stack: Stack, jira: JiraClient
) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "billing"})
    key = (await status_becomes(stack, request_id, "awaiting_manual"))["actions"][0]["outputs"][
        "key"
    ]
    answer = await api(
        stack,
        "POST",
        f"/requests/{request_id}/escalate",
        body={"reason": "launch is tomorrow", "urgency": "critical"},
    )
    assert answer["level"] == 1

    async def raised() -> bool:
        issue = await jira.get_issue(key)
        return issue.priority == "Highest" and any(
            "launch is tomorrow" in c for c in await jira.comments(key)
        )

    await eventually(raised, what="the ticket's priority and comment")

    async def history() -> dict[str, Any] | None:
        found = await api(stack, "GET", f"/requests/{request_id}/escalation")
        return found if found["history"] else None

    escalation = await eventually(history, what="the escalation history")
    assert escalation["level"] == 1
    assert escalation["history"][0]["urgency"] == "critical"


async def test_requesters_see_only_their_own_requests(stack: Stack) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "private"})
    with pytest.raises(CliError) as caught:
        await api(stack, "GET", f"/requests/{request_id}", who="olga")
    assert caught.value.code == "PAO-REQ-001"
    with pytest.raises(CliError):
        await api(stack, "POST", f"/requests/{request_id}/abort", body={}, who="olga")
    mine = await api(stack, "GET", "/requests", who="olga")
    assert request_id not in [r["request_id"] for r in mine["requests"]]
    everyone = await api(stack, "GET", "/requests", who="admin", params={"limit": 500})
    assert request_id in [r["request_id"] for r in everyone["requests"]]


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    tables = {
        "requests": "SELECT * FROM requests ORDER BY request_id",
        "request_actions": "SELECT * FROM request_actions ORDER BY request_id, position",
        "request_log": "SELECT * FROM request_log ORDER BY request_id, seq",
    }
    return {name: [dict(r) for r in await pool.fetch(sql)] for name, sql in tables.items()}


async def test_the_read_models_rebuild_from_position_zero_to_the_same_rows(stack: Stack) -> None:
    from pao.request.projection import rebuild

    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "rebuilt"})
    await status_becomes(stack, request_id, "awaiting_manual")
    await api(stack, "POST", f"/requests/{request_id}/escalate", body={"reason": "soon please"})

    async def ticket_updated() -> bool:
        logs = await api(stack, "GET", f"/requests/{request_id}/logs")
        return "ManualTicketUpdated" in [e["event_type"] for e in logs["entries"]]

    await eventually(ticket_updated, what="the escalation to reach the ticket")

    async def settled() -> dict[str, list[Any]] | None:
        before = await snapshot(stack.pool)
        head = await stack.pool.fetchval("SELECT max(global_position) FROM events")
        applied = await stack.pool.fetchval(
            "SELECT global_position FROM projection_checkpoints WHERE name = 'requests'"
        )
        return before if head == applied and before == await snapshot(stack.pool) else None

    before = await eventually(settled, what="the projection to catch up")
    assert await rebuild(stack.pool) > 0
    assert await snapshot(stack.pool) == before


async def test_logs_follow_streams_events_until_the_request_ends(
    stack: Stack, jira: JiraClient
) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "streamed"})
    key = (await status_becomes(stack, request_id, "awaiting_manual"))["actions"][0]["outputs"][
        "key"
    ]
    client = signed_client(stack.url)

    def follow() -> list[str]:
        return list(client.stream_lines(f"/requests/{request_id}/logs", params={"follow": "true"}))

    streaming = asyncio.create_task(asyncio.to_thread(follow))
    await asyncio.sleep(0.5)
    await jira.transition_to(key, "Done")
    lines = await asyncio.wait_for(streaming, timeout=30)
    client.close()
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events[-1] == "end"
    assert events.count("log") >= 5
    assert any('"RequestCompleted"' in line for line in lines)


async def test_a_bad_filter_is_named(stack: Stack) -> None:
    with pytest.raises(CliError) as caught:
        await api(stack, "GET", "/requests", params={"status": "done"})
    assert caught.value.details[0]["field"] == "status"


async def ticket_of(stack: Stack, request_id: str, jira: JiraClient) -> Any:
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    action = next(a for a in waiting["actions"] if a["status"] == "awaiting_manual")
    return await jira.get_issue(action["outputs"]["key"])


async def resource_becomes(stack: Stack, resource_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await api(stack, "GET", f"/resources/{resource_id}")
        return found if found["state"] == state else None

    return await eventually(probe, timeout=90, what=f"resource {state}")


async def test_a_manual_resource_is_listed_changed_and_decommissioned_through_tickets(
    stack: Stack, jira: JiraClient
) -> None:
    name = f"res{uuid.uuid4().hex[:8]}"
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": name})
    created = await ticket_of(stack, request_id, jira)
    resource_id = (await api(stack, "GET", f"/requests/{request_id}"))["resource_id"]
    resource = await resource_becomes(stack, resource_id, "provisioning")
    assert (resource["owner"], resource["owner_team"]) == ("dana", "team-data")
    # Not while it is being made; never by someone who may not see it.
    with pytest.raises(CliError) as busy:
        await api(stack, "POST", f"/resources/{resource_id}/update", body={"inputs": POSTGRES})
    assert (busy.value.status, busy.value.code) == (409, "PAO-RES-002")
    with pytest.raises(CliError) as hidden:
        await api(stack, "GET", f"/resources/{resource_id}", who="olga")
    assert (hidden.value.status, hidden.value.code) == (404, "PAO-RES-001")
    mine = await api(stack, "GET", "/resources", params={"item_id": "postgresql-rds"})
    assert resource_id in [r["resource_id"] for r in mine["resources"]]
    theirs = await api(stack, "GET", "/resources", who="olga")
    assert resource_id not in [r["resource_id"] for r in theirs["resources"]]
    with pytest.raises(CliError) as bad:
        await api(stack, "GET", "/resources", params={"state": "lost"})
    assert (bad.value.status, bad.value.details[0]["field"]) == (422, "state")

    await jira.transition_to(created.key, "Done")
    await resource_becomes(stack, resource_id, "active")

    bigger = {**POSTGRES, "db_name": name, "instance_size": "large"}
    update = await api(stack, "POST", f"/resources/{resource_id}/update", body={"inputs": bigger})
    assert update["kind"] == "update"
    changed = await ticket_of(stack, update["request_id"], jira)
    assert "large" in changed.summary
    assert changed.key != created.key
    await jira.transition_to(changed.key, "Done")
    active = await resource_becomes(stack, resource_id, "active")
    assert active["inputs"]["instance_size"] == "large"

    gone = await api(
        stack, "POST", f"/resources/{resource_id}/decommission", body={"reason": "replaced"}
    )
    teardown = await ticket_of(stack, gone["request_id"], jira)
    assert teardown.summary.startswith("Decommission PostgreSQL on Amazon RDS")
    assert resource_id in teardown.summary
    assert "DBA" in teardown.key
    await jira.transition_to(teardown.key, "Done")
    final = await resource_becomes(stack, resource_id, "decommissioned")
    assert [r["kind"] for r in final["requests"]] == ["create", "update", "decommission"]


async def signed_post(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response:
    """A signed call whose whole answer (status, headers) the test reads."""
    client = signed_client(stack.url, "PAOTESTKEY0000000001", "integration-secret")
    client.close()
    url = f"{stack.url}/api/v1{path}"
    payload = json.dumps(body).encode()
    headers = sign(
        client.target,
        "POST",
        url,
        payload,
        {"Content-Type": "application/json", "Accept": "application/json"},
    )
    async with httpx.AsyncClient() as http:
        return await http.post(url, content=payload, headers=headers)


def too_soon(answer: httpx.Response, *, cooldown: int) -> int:
    """The seconds a 429 says to wait, checked to agree everywhere it says them."""
    assert answer.status_code == 429
    wait = int(answer.headers["Retry-After"])
    assert 0 < wait <= cooldown
    error = answer.json()["error"]
    assert error["code"] == "PAO-REQ-006"
    assert f"again in {wait} s" in error["message"]
    assert {"field": "retry_after_seconds", "message": str(wait)}.items() <= error["details"][
        0
    ].items()
    return wait


async def test_escalating_again_too_soon_is_refused_with_the_time_to_wait(stack: Stack) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "payroll"})
    await status_becomes(stack, request_id, "awaiting_manual")
    path = f"/requests/{request_id}/escalate"

    first = await signed_post(stack, path, {"reason": "launch is tomorrow"})
    assert first.status_code == 202
    again = await signed_post(stack, path, {"reason": "really tomorrow", "urgency": "critical"})

    too_soon(again, cooldown=300)
    assert again.json()["error"]["correlation_id"] == again.headers["X-Correlation-ID"]


async def test_retrying_again_too_soon_is_refused_with_the_time_to_wait(
    stack: Stack, jira: JiraClient
) -> None:
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "invoices"})
    first = (await status_becomes(stack, request_id, "awaiting_manual"))["actions"][0]
    await jira.transition_to(first["outputs"]["key"], "Rejected")
    await status_becomes(stack, request_id, "failed")
    path = f"/requests/{request_id}/retry"
    assert (await signed_post(stack, path, {})).status_code == 202

    async def new_ticket() -> str | None:
        current = await api(stack, "GET", f"/requests/{request_id}/status")
        key = current["actions"][0]["outputs"].get("key")
        waiting = current["status"] == "awaiting_manual" and key != first["outputs"]["key"]
        return key if waiting else None

    await jira.transition_to(await eventually(new_ticket, what="the retry's ticket"), "Rejected")
    await status_becomes(stack, request_id, "failed")

    too_soon(await signed_post(stack, path, {}), cooldown=30)
    assert (await api(stack, "GET", f"/requests/{request_id}/status"))["status"] == "failed"
