"""An automated action that fails for good falls back to a manual JIRA ticket, as the item says."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from test_request_flow import api, status_becomes, submit

from conftest import REPO, fresh_database
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.stack import running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEM = """
apiVersion: pao.dev/v1
kind: CatalogItem
metadata:
  id: dns-record
  name: DNS record
  category: networking
  owner: team-platform
  version: 1.0.0
  description: A DNS record in the internal zone, created through the DNS API.
form:
  schema:
    type: object
    required: [name]
    properties:
      name: {type: string, pattern: "^[a-z][a-z0-9-]{2,30}$"}
    examples: [{name: shop}]
fulfillment:
  mode: automated
  fallback:
    strategy: manual
    jira:
      project: OPS
      issue_type: Task
      summary: "Create DNS record {{ inputs.name }} by hand ({{ request.id }})"
  actions:
    - name: create_record
      type: rest
      retry: {max_attempts: 1}
      rest:
        method: POST
        url: "{{ env.dns_api }}/records"
        body: {name: "{{ inputs.name }}"}
"""


async def test_a_refused_api_call_opens_the_fallback_ticket_and_its_completion_ends_the_request(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path: Path,
) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "zone is read-only"}, status=403)

    app = web.Application()
    app.router.add_post("/records", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
    (catalog / "networking").mkdir()
    (catalog / "networking" / "dns-record.yaml").write_text(ITEM)
    environments = tmp_path / "environments.yaml"
    environments.write_text(
        f"dev: {{dns_api: 'http://{host}:{port}', rest_allowed_hosts: ['127.0.0.1:*']}}\n"
    )
    try:
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
                keys,
                services=("gateway", "relay", "projector", "request", "fulfillment"),
                data_dir=tmp_path / "state",
            ) as stack:
                request_id = await submit(stack, "dns-record", {"name": "shop"})
                waiting = await status_becomes(stack, request_id, "awaiting_manual")
                actions = {a["name"]: a for a in waiting["actions"]}
                assert actions["create_record"]["status"] == "failed"
                assert "403" in actions["create_record"]["error"]
                key = actions["fallback"]["outputs"]["key"]
                assert key.startswith("OPS-")
                async with aiohttp.ClientSession() as http:
                    jira = JiraClient(jira_url, session=http)
                    issue = await jira.get_issue(key)
                    assert issue.summary == f"Create DNS record shop by hand ({request_id})"
                    await jira.transition_to(key, "Done")
                done = await status_becomes(stack, request_id, "completed")
                assert done["progress"] == {"done": 1, "total": 2}
                logs = await api(stack, "GET", f"/requests/{request_id}/logs")
                assert "FallbackStarted" in [e["event_type"] for e in logs["entries"]]
    finally:
        await runner.cleanup()
