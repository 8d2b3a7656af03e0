"""A preview renders exactly what a run renders: `POST /validate/request` and the fulfilment
worker build the template context with one function, so the same inputs give the same text."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from test_request_flow import POSTGRES, api, status_becomes, submit

from conftest import REPO, fresh_database
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEM = "catalog/databases/postgresql-rds.yaml"
# Every scope but the ones that differ by nature between a preview and a run (the request's id,
# its time, outputs of earlier actions): user, inputs and their defaults, env, system, item.
DESCRIPTION_END = (
    "Requested through {{ system.platform_name }} ({{ system.region }}) by {{ user.id }} "
    "for account {{ env.account_id }}, item {{ item.id }} {{ item.version }}."
)


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog", catalog)
    item = catalog / ITEM.removeprefix("catalog/")
    text = item.read_text(encoding="utf-8")
    assert "Requested through PAO, request {{ request.id }}." in text
    item.write_text(
        text.replace("Requested through PAO, request {{ request.id }}.", DESCRIPTION_END),
        encoding="utf-8",
    )
    environments = tmp_path / "environments.yaml"
    environments.write_text("dev: {account_id: '111122223333'}\n", encoding="utf-8")
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": catalog,
                "environments_file": environments,
                "platform_name": "Platform One",
            }
        )
        async with running_stack(
            own,
            keys,
            services=("gateway", "relay", "projector", "request", "fulfillment"),
            data_dir=tmp_path / "state",
        ) as running:
            yield running


async def test_the_preview_of_an_action_is_what_its_run_renders(
    stack: Stack, jira_url: str
) -> None:
    inputs = {**POSTGRES, "db_name": "previewed"}
    preview = await api(
        stack,
        "POST",
        "/validate/request",
        body={"item_id": "postgresql-rds", "inputs": inputs},
    )
    assert preview["valid"], preview
    previewed = preview["actions"][0]["spec"]
    assert "account 111122223333" in previewed["description"]
    assert "Platform One" in previewed["description"]

    request_id = await submit(stack, "postgresql-rds", inputs)
    waiting = await status_becomes(stack, request_id, "awaiting_manual")
    started = await stack.pool.fetchval(
        "SELECT data FROM events WHERE stream_id = $1 AND event_type = 'ActionStarted'",
        f"request-{request_id}",
    )
    assert started["spec"] == previewed  # every field the run rendered, as previewed
    async with aiohttp.ClientSession() as http:
        issue = await JiraClient(jira_url, session=http).get_issue(
            waiting["actions"][0]["outputs"]["key"]
        )
    assert issue.summary == previewed["summary"]
    assert issue.description == previewed["description"]
    assert issue.priority == previewed["priority"]
