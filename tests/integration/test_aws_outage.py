"""AWS out for longer than the breaker's window: the automated action stops waiting, the item's
fallback ticket opens in JIRA, and when people finish it the request completes and the resource
is there. Real moto (SigV4-checked, then stopped), real JIRA (jira820), the catalog's own item."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from test_request_flow import api, status_becomes

from conftest import REPO, fresh_database
from pao.devstack.aws import EmbeddedAws, use_identity
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support import eventually
from support.stack import running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_outage_past_the_breaker_window_opens_the_fallback_ticket_and_it_completes(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    jira_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aws = EmbeddedAws(tmp_path)
    endpoint = await aws.start()
    try:
        identity = await aws.bootstrap(tmp_path / "aws")
    finally:
        await aws.stop()  # AWS is out from before the request until after it ends
    use_identity(identity, _Env(monkeypatch))
    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "catalog" / "schema", catalog / "schema")
    (catalog / "observability").mkdir()
    shutil.copy(REPO / "catalog" / "observability" / "log-group.yaml", catalog / "observability")
    environments = tmp_path / "environments.yaml"
    host = endpoint.removeprefix("http://")
    environments.write_text(
        yaml.safe_dump({"dev": {"aws_region": identity.region, "rest_allowed_hosts": [host]}})
    )
    async with fresh_database(postgres_server) as dsn:
        configured = settings.model_copy(
            update={
                "database_url": dsn,
                "catalog_dir": catalog,
                "environments_file": environments,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.3,
                "aws_endpoint_url": endpoint,
                "breaker_threshold": 2,
                "breaker_seconds": 1.0,
                "fulfillment_park_limit_seconds": 4.0,
            }
        )
        services = ("gateway", "relay", "projector", "catalog", "request", "fulfillment")
        async with running_stack(
            configured, keys, services=services, data_dir=tmp_path / "state"
        ) as stack:
            started = time.monotonic()
            answer = await api(
                stack,
                "POST",
                "/requests",
                body={
                    "item_id": "log-group",
                    "inputs": {"application": "orders", "environment": "dev"},
                },
            )
            request_id = answer["request_id"]
            waiting = await status_becomes(stack, request_id, "awaiting_manual")
            assert time.monotonic() - started >= 4.0  # it waited out the breaker first
            fallback = next(a for a in waiting["actions"] if a["name"] == "fallback")
            detail = await api(stack, "GET", f"/requests/{request_id}")
            failed = next(a for a in detail["actions"] if a["name"] == "create_log_group")
            assert failed["status"] == "failed"
            assert "unavailable" in (failed.get("error") or detail.get("last_error") or "")

            async with aiohttp.ClientSession() as http:
                jira = JiraClient(jira_url, session=http)
                issue = await jira.get_issue(fallback["outputs"]["key"])
                assert issue.key.startswith("PLATFORM-")
                assert "/pao/orders/dev" in issue.summary
                await jira.transition_to(issue.key, "Done")
            await status_becomes(stack, request_id, "completed")

            async def active() -> bool:  # its own stream, projected a moment after the request's
                resource = await api(stack, "GET", f"/resources/{detail['resource_id']}")
                return resource["state"] == "active"

            await eventually(active, timeout=30, what="the resource to be active")


class _Env:
    """os.environ through monkeypatch, so the test leaves the process's environment as it was."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def pop(self, name: str, default: object = None) -> object:
        self._monkeypatch.delenv(name, raising=False)
        return default

    def update(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._monkeypatch.setenv(name, value)
