"""A git catalog: pushes reach PAO through a signed GitHub webhook; a broken push changes nothing.

Two gateway instances share one database; a refresh on one reaches the other through the catalog
events the relay publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from conftest import REPO, fresh_database, signed_client
from pao.catalog.bootstrap import CatalogParts
from pao.catalog.follower import follow_catalog
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import GitSource
from pao.gateway.app import create_app
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.kafka import make_producer
from pao.shared.keystore import KeyStore
from pao.shared.relay import Relay
from pao.shared.settings import Settings
from support import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "webhook-secret-for-tests"
NEW_ITEM = (REPO / "catalog" / "tests" / "valid" / "example-catalog-item.yaml").read_text()


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@dataclass
class GitCatalog:
    """A bare repository (the 'GitHub' side) and a clone to push from."""

    bare: Path
    work: Path

    def push(self, message: str, branch: str = "main") -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:{branch}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()


@dataclass
class Instance:
    url: str
    parts: CatalogParts


@pytest.fixture
def repo(tmp_path: Path) -> GitCatalog:
    bare, work = tmp_path / "catalog.git", tmp_path / "work"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    git("config", "user.email", "platform@example.com", cwd=work)
    git("config", "user.name", "Platform", cwd=work)
    shutil.copytree(
        REPO / "catalog", work / "catalog", ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    catalog = GitCatalog(bare, work)
    catalog.push("the catalog")
    return catalog


@pytest_asyncio.fixture(loop_scope="session")
async def instances(
    repo: GitCatalog, postgres_server: str, settings: Settings, keys: KeyStore, tmp_path: Path
) -> AsyncIterator[list[Instance]]:
    """Two gateways on their own database, each following the catalog; a relay between them."""
    async with fresh_database(postgres_server) as dsn:
        pool = await create_pool(dsn, min_size=2, max_size=20, application_name="pao-tests")
        store = EventStore(pool)
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "catalog_git_url": f"file://{repo.bare}",
                "catalog_git_path": "catalog",
                "github_webhook_secret": SECRET,
            }
        )
        stop = asyncio.Event()
        producer = make_producer(own)
        await producer.start()
        tasks = [asyncio.create_task(Relay(pool, producer, poll_interval=0.01).run(stop))]
        runners, made = [], []
        for n in range(2):
            source = GitSource(
                own.catalog_git_url or "",
                ref="main",
                subpath="catalog",
                cache_dir=tmp_path / f"cache-{n}",
            )
            parts = CatalogParts(source=source, store=store)
            if n == 0:
                await refresh_catalog(source=source, store=store, view=parts.view)
            await parts.view.catch_up(store)
            tasks.append(asyncio.create_task(follow_catalog(own, store, parts.view, stop)))
            runner = web.AppRunner(
                create_app(own, keys=keys, pool=pool, catalog_parts=parts), handle_signals=False
            )
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            runners.append(runner)
            made.append(Instance(f"http://{host}:{port}", parts))
        yield made
        stop.set()
        await asyncio.gather(*tasks)
        for runner in runners:
            await runner.cleanup()
        await producer.stop()
        await pool.close()


async def webhook(url: str, event: str, payload: dict, secret: str = SECRET) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/v1/webhooks/github",
            data=body,
            headers={
                "X-GitHub-Event": event,
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
            },
        ) as response,
    ):
        return response.status, await response.json()


async def catalog_of(url: str) -> dict:
    client = signed_client(url)
    try:
        return await asyncio.to_thread(client.request, "GET", "/catalog")
    finally:
        client.close()


async def test_a_signed_push_makes_a_new_item_visible_on_every_instance(
    repo: GitCatalog, instances: list[Instance]
) -> None:
    first, second = instances
    before = await catalog_of(first.url)
    assert before["total"] == 11

    status, body = await webhook(first.url, "ping", {"zen": "Keep it logically awesome."})
    assert (status, body["event"]) == (200, "ping")

    (repo.work / "catalog" / "databases" / "redis-cache.yaml").write_text(NEW_ITEM)
    revision = repo.push("add redis-cache")
    status, body = await webhook(
        first.url, "push", {"ref": "refs/heads/main", "pusher": {"name": "dana"}}
    )
    assert status == 200, body
    assert body["status"] == "updated"
    assert body["added"] == ["redis-cache"]
    assert body["revision"] == revision

    after = await catalog_of(first.url)
    assert after["total"] == 12
    assert after["catalog_version"] == body["catalog_version"] != before["catalog_version"]

    async def second_caught_up() -> bool:
        return (await catalog_of(second.url))["catalog_version"] == body["catalog_version"]

    await eventually(second_caught_up, timeout=20, what="the second instance to follow")


async def test_a_broken_push_keeps_the_old_catalog_and_reports_the_error(
    repo: GitCatalog, instances: list[Instance]
) -> None:
    first, _ = instances
    before = await catalog_of(first.url)
    item = repo.work / "catalog" / "compute" / "eks-application.yaml"
    item.write_text(item.read_text().replace("{{ inputs.app_name }} in", "{{ inputs.app_nam }} in"))
    repo.push("typo in a template")

    status, body = await webhook(first.url, "push", {"ref": "refs/heads/main"})

    assert status == 422
    assert body["error"]["code"] == "PAO-CAT-002"
    detail = body["error"]["details"][0]
    assert detail["field"].startswith("compute/eks-application.yaml#/fulfillment/fallback/jira")
    assert "inputs.app_nam is not a field" in detail["message"]
    assert detail["line"]
    assert (await catalog_of(first.url))["catalog_version"] == before["catalog_version"]
    events = await first.parts.store.read_stream("catalog")
    assert events[-1].event_type == "CatalogRefreshFailed"
    assert events[-1].data["kept_version"] == before["catalog_version"]


async def test_a_bad_signature_is_refused_and_changes_nothing(
    repo: GitCatalog, instances: list[Instance]
) -> None:
    first, _ = instances
    version = first.parts.view.stream_version
    (repo.work / "catalog" / "databases" / "redis-cache.yaml").write_text(NEW_ITEM)
    repo.push("add redis-cache")
    status, body = await webhook(first.url, "push", {"ref": "refs/heads/main"}, secret="guess")
    assert status == 401
    assert body["error"]["code"] == "PAO-CAT-005"
    assert first.parts.view.stream_version == version
    assert (await catalog_of(first.url))["total"] == 11


async def test_pushes_to_other_branches_are_ignored(
    repo: GitCatalog, instances: list[Instance]
) -> None:
    first, _ = instances
    status, body = await webhook(first.url, "push", {"ref": "refs/heads/feature"})
    assert status == 202
    assert "not main" in body["ignored"]
