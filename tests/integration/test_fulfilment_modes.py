"""Fulfilment modes end to end: an operator switches an automated item to its manual ticket and
back, requests in flight keep their mode, a requester chooses a mode the item offers, and a
decommission's teardown uses what the create recorded. JIRA is real (jira820); the item's API is
a local HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from conftest import BIN, REPO, fresh_database, signed_client
from pao.devctl.errors import CliError
from pao.devctl.profiles import Profile, save_profile
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEM = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: sns-topic
  name: SNS topic
  category: messaging
  owner: team-platform
  version: VERSION
  description: An SNS topic, created through the topics API.
form:
  schema:
    type: object
    required: [name]
    properties:
      name: {type: string, pattern: "^[a-z][a-z0-9-]{2,30}$"}
      retention: {type: integer, default: 1}
    examples: [{name: orders}]
fulfillment:
  mode: automated
  modes: [automated, manual]
  fallback:
    strategy: manual
    jira:
      project: OPS
      issue_type: Task
      summary: "{{ request.kind }} topic {{ inputs.name }} by hand ({{ request.id }})"
  actions:
    - name: create_topic
      type: rest
      retry: {max_attempts: 1}
      rest:
        method: POST
        url: "{{ env.topics_api }}/topics"
        body: {name: "{{ inputs.name }}"}
        outputs: {topic_arn: /arn}
lifecycle:
  teardown:
    - name: delete_topic
      type: rest
      retry: {max_attempts: 1}
      rest:
        method: DELETE
        url: "{{ env.topics_api }}/topics/{{ resource.outputs.create_topic.topic_arn }}"
"""

#: The same API, offered in its default mode only.
AUTOMATED_ONLY = (
    ITEM.replace("id: sns-topic", "id: sns-topic-automated")
    .replace("  modes: [automated, manual]\n", "")
    .replace("version: VERSION", "version: 1.0.0")
)

PEOPLE = {
    "dana": ("PAOTESTKEY0000000001", "integration-secret"),
    "admin": ("PAOADMINKEY000000001", "admin-secret"),
    "owen": ("PAOOWNERKEY000000001", "owner-secret"),
}


@dataclass
class TopicsApi:
    """The item's API: creates topics (holding back the one named `slow` until released) and
    deletes them, remembering every call."""

    url: str = ""
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    slow_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)

    async def create(self, request: web.Request) -> web.Response:
        name = (await request.json())["name"]
        if name == "slow":
            self.slow_arrived.set()
            await self.release_slow.wait()
        self.created.append(name)
        return web.json_response({"arn": f"arn:aws:sns:us-east-1:123456789012:{name}"}, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        self.deleted.append(request.match_info["arn"])
        return web.Response(status=204)


@pytest_asyncio.fixture(loop_scope="session")
async def topics() -> AsyncIterator[TopicsApi]:
    api = TopicsApi()
    app = web.Application()
    app.router.add_post("/topics", api.create)
    app.router.add_delete("/topics/{arn}", api.delete)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    api.url = f"http://{host}:{port}"
    yield api
    api.release_slow.set()
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    topics: TopicsApi,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
    (catalog / "messaging").mkdir()
    (catalog / "messaging" / "sns-topic.yaml").write_text(ITEM.replace("VERSION", "1.0.0"))
    (catalog / "messaging" / "sns-topic-automated.yaml").write_text(AUTOMATED_ONLY)
    environments = tmp_path / "environments.yaml"
    environments.write_text(
        f"dev: {{topics_api: '{topics.url}', rest_allowed_hosts: ['127.0.0.1:*']}}\n"
    )
    people = KeyStore(
        [
            keys.get("PAOTESTKEY0000000001"),
            keys.get("PAOADMINKEY000000001"),
            KeyEntry(
                access_key_id="PAOOWNERKEY000000001",
                secret_access_key="owner-secret",
                user="owen",
                teams=("team-platform",),
            ),
        ]
    )  # type: ignore[list-item]
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": catalog,
                "environments_file": environments,
            }
        )
        async with running_stack(
            own,
            people,
            services=("gateway", "relay", "projector", "request", "fulfillment"),
            data_dir=tmp_path / "state",
        ) as running:
            yield running


async def api(stack: Stack, method: str, path: str, *, who: str = "dana", **kwargs: Any) -> Any:
    key, secret = PEOPLE[who]
    client = signed_client(stack.url, key, secret)
    try:
        return await asyncio.to_thread(client.request, method, path, **kwargs)
    finally:
        client.close()


async def submit(stack: Stack, name: str, **body: Any) -> str:
    answer = await api(
        stack, "POST", "/requests", body={"item_id": "sns-topic", "inputs": {"name": name}, **body}
    )
    return answer["request_id"]


async def status_becomes(stack: Stack, request_id: str, wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        current = await api(stack, "GET", f"/requests/{request_id}/status")
        return current if current["status"] == wanted else None

    return await eventually(probe, timeout=30, what=f"request {request_id} {wanted}")


async def resource_becomes(stack: Stack, resource_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await api(stack, "GET", f"/resources/{resource_id}")
        return found if found["state"] == state else None

    return await eventually(probe, timeout=30, what=f"resource {state}")


async def switch(stack: Stack, mode: str, *, who: str, item: str = "sns-topic") -> Any:
    return await api(
        stack,
        "POST",
        f"/catalog/items/{item}/mode",
        who=who,
        body={"mode": mode, "reason": "topics API maintenance window"},
    )


async def manual_ticket(stack: Stack, request_id: str) -> str:
    """The key of the manual ticket the request waits on (its only action)."""
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    assert [a["name"] for a in waiting["actions"]] == ["manual"]
    key = waiting["actions"][0]["outputs"]["key"]
    assert key.startswith("OPS-")
    return key


async def done_by_hand(
    stack: Stack, request_id: str, jira: JiraClient, key: str | None = None
) -> Any:
    """A person does the work of the request's manual ticket and closes it; the request
    completes."""
    key = key or await manual_ticket(stack, request_id)
    await jira.transition_to(key, "Done")
    await status_becomes(stack, request_id, "completed")
    return await jira.get_issue(key)


async def mode_of(stack: Stack, request_id: str) -> str:
    return (await api(stack, "GET", f"/requests/{request_id}"))["mode"]


async def test_an_operator_switch_sends_new_requests_to_the_ticket_and_in_flight_ones_keep_theirs(
    stack: Stack, topics: TopicsApi, jira_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        jira = JiraClient(jira_url, session=http)

        first = await submit(stack, "first")
        await status_becomes(stack, first, "completed")
        resource_id = (await api(stack, "GET", f"/requests/{first}"))["resource_id"]
        await resource_becomes(stack, resource_id, "active")

        # Only admins and the owning team switch an item's mode; a refusal changes nothing.
        with pytest.raises(CliError) as refused:
            await switch(stack, "manual", who="dana")
        assert (refused.value.status, refused.value.code) == (403, "PAO-AUTH-010")
        assert (await api(stack, "GET", "/catalog/items/sns-topic"))["modes"]["mode"] == (
            "automated"
        )

        in_flight = await submit(stack, "slow")
        await asyncio.wait_for(topics.slow_arrived.wait(), 30)
        switched = await switch(stack, "manual", who="owen")
        assert (switched["mode"], switched["default_mode"], switched["changed"]) == (
            "manual",
            "automated",
            True,
        )
        assert switched["mode_switch"]["by"] == "owen"

        listed = await api(stack, "GET", "/catalog", params={"q": "sns-topic"})
        summary = next(i for i in listed["items"] if i["id"] == "sns-topic")
        assert (summary["mode"], summary["default_mode"]) == ("manual", "automated")
        assert summary["mode_switch"]["reason"] == "topics API maintenance window"

        # The next request opens the manual ticket ...
        after_switch = await submit(stack, "next")
        key = await manual_ticket(stack, after_switch)

        # ... while the request that was in flight keeps the mode it was submitted in.
        topics.release_slow.set()
        kept = await status_becomes(stack, in_flight, "completed")
        assert [(a["name"], a["status"]) for a in kept["actions"]] == [
            ("create_topic", "succeeded")
        ]
        assert await mode_of(stack, in_flight) == "automated"

        # The ticket's completion completes the request.
        issue = await done_by_hand(stack, after_switch, jira, key)
        assert issue.summary == f"create topic next by hand ({after_switch})"
        assert await mode_of(stack, after_switch) == "manual"
        assert "next" not in topics.created

        # A refresh with a new version of the item leaves the switch standing.
        item_file = stack.settings.catalog_dir / "messaging" / "sns-topic.yaml"
        item_file.write_text(ITEM.replace("VERSION", "1.0.1"))
        refreshed = await api(stack, "POST", "/catalog/refresh", who="admin", body={})
        assert refreshed["updated"] == ["sns-topic"]
        assert (await api(stack, "GET", "/catalog/items/sns-topic"))["modes"]["mode"] == "manual"

        # An update made while the switch holds runs in the manual mode too.
        update = await api(
            stack,
            "POST",
            f"/resources/{resource_id}/update",
            body={"inputs": {"name": "first", "retention": 7}},
        )
        changed = await done_by_hand(stack, update["request_id"], jira)
        assert changed.summary.startswith("update topic first by hand")
        await resource_becomes(stack, resource_id, "active")

        back = await switch(stack, "automated", who="admin")
        assert (back["mode"], back["mode_switch"]) == ("automated", None)
        after_back = await submit(stack, "later")
        done = await status_becomes(stack, after_back, "completed")
        assert [a["name"] for a in done["actions"]] == ["create_topic"]
        assert "later" in topics.created

        # The teardown deletes the topic the create was given, though an update ran since.
        gone = await api(
            stack, "POST", f"/resources/{resource_id}/decommission", body={"reason": "unused"}
        )
        await status_becomes(stack, gone["request_id"], "completed")
        assert topics.deleted == ["arn:aws:sns:us-east-1:123456789012:first"]
        await resource_becomes(stack, resource_id, "decommissioned")


async def test_a_requester_chooses_a_mode_the_item_offers_and_no_other(
    stack: Stack, topics: TopicsApi, jira_url: str
) -> None:
    async with aiohttp.ClientSession() as http:
        chosen = await submit(stack, "by-hand", mode="manual")
        await done_by_hand(stack, chosen, JiraClient(jira_url, session=http))
    assert await mode_of(stack, chosen) == "manual"
    assert "by-hand" not in topics.created

    with pytest.raises(CliError) as refused:
        await api(
            stack,
            "POST",
            "/requests",
            body={"item_id": "sns-topic-automated", "inputs": {"name": "x-ray"}, "mode": "manual"},
        )
    assert (refused.value.status, refused.value.code) == (400, "PAO-CAT-007")
    assert [d["field"] for d in refused.value.details] == ["/mode"]
    assert "automated" in (refused.value.suggestion or "")
    mine = await api(stack, "GET", "/requests", params={"item_id": "sns-topic-automated"})
    assert mine["total"] == 0

    with pytest.raises(CliError) as unsupported:
        await switch(stack, "manual", who="admin", item="sns-topic-automated")
    assert (unsupported.value.status, unsupported.value.code) == (400, "PAO-CAT-007")


async def devctl(*args: str, who: str, stack: Stack, tmp_path: Path) -> tuple[int, str, str]:
    """devctl as `who`, with a profile of its own; exit code, stdout, stderr."""
    key, secret = PEOPLE[who]
    config = tmp_path / f"{who}.yaml"
    save_profile(
        "local",
        Profile(endpoint=stack.url, access_key_id=key, secret_access_key=secret),
        make_default=True,
        path=config,
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    environment |= {"PAO_CONFIG_FILE": str(config), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "devctl"),
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_devctl_switches_an_items_mode_and_shows_it(stack: Stack, tmp_path: Path) -> None:
    async def run(*args: str, who: str = "owen") -> tuple[int, str, str]:
        return await devctl(*args, who=who, stack=stack, tmp_path=tmp_path)

    code, _, err = await run("catalog", "mode", "sns-topic", "manual", "--reason", "x", who="owen")
    assert code != 0
    assert "/reason" in err  # 3 to 500 characters

    code, _, err = await run(
        "catalog", "mode", "sns-topic", "manual", "--reason", "API outage", who="dana"
    )
    assert (code, "PAO-AUTH-010" in err) == (1, True)

    code, out, err = await run("catalog", "mode", "sns-topic", "manual", "--reason", "API outage")
    assert code == 0, err
    assert "sns-topic: new requests run in mode manual (its default: automated)" in out

    code, out, _ = await run("catalog", "list")
    row = next(line for line in out.splitlines() if "sns-topic " in line)
    assert "manual (switched)" in row
    code, out, _ = await run("catalog", "get", "sns-topic")
    assert "manual by owen at " in out
    assert "API outage" in out
    code, out, _ = await run("-o", "json", "catalog", "get", "sns-topic")
    assert json.loads(out)["modes"]["mode_switch"]["reason"] == "API outage"

    code, out, err = await run(
        "-o", "json", "request", "submit", "sns-topic", "--set", "name=from-cli", "--mode", "manual"
    )
    assert code == 0, err
    request_id = json.loads(out)["request_id"]
    code, out, _ = await run("request", "get", request_id)
    assert next(line for line in out.splitlines() if " mode " in line).split()[-2] == "manual"

    code, out, err = await run(
        "-o", "json", "catalog", "mode", "sns-topic", "automated", "--reason", "API is back"
    )
    assert code == 0, err
    back = json.loads(out)
    assert (back["mode"], back["mode_switch"], back["changed"]) == ("automated", None, True)
