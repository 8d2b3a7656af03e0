"""Conditional reads: a client that sends back the `ETag` it was given gets 304 Not Modified
while nothing changed, answered from what the gateway knows without asking the database, and
the whole answer again once something did; a caller who may not see a request is refused as if
they had sent no tag."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from botocore.credentials import ReadOnlyCredentials
from prometheus_client import REGISTRY

from conftest import BIN, REPO, fresh_database
from pao.catalog.bootstrap import CatalogParts
from pao.catalog.refresh import refresh_catalog
from pao.catalog.sources import DirectorySource
from pao.contracts import events as ev
from pao.devctl.client import Target, sign
from pao.gateway.app import create_app
from pao.gateway.caching import VERSIONS
from pao.gateway.resources import CATALOG, WAKEUPS
from pao.request.projection import Projector
from pao.shared.database import create_pool
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support.stack import devctl_profile

pytestmark = pytest.mark.asyncio(loop_scope="session")

DANA = ("PAOCACHEKEY000000001", "dana-secret")
OLGA = ("PAOCACHEKEY000000002", "olga-secret")
ADMIN = ("PAOCACHEKEY000000003", "admin-secret")
ABORTED = "SELECT 1 FROM requests WHERE request_id = $1 AND status = 'aborted'"
POSTGRES = {
    "db_name": "orders",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "orders@example.com",
}


class CountingPool:
    """The gateway's pool, counting each use; while `away`, every use fails as an unreachable
    database does."""

    _USES = frozenset({"acquire", "fetch", "fetchrow", "fetchval", "execute", "executemany"})

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.uses = 0
        self.away = False

    def __getattr__(self, name: str) -> Any:
        if name in self._USES:
            self.uses += 1
            if self.away:
                raise ConnectionRefusedError("the database is unreachable")
        return getattr(self._pool, name)


@dataclass
class Gateway:
    url: str
    app: web.Application
    pool: asyncpg.Pool
    counting: CountingPool
    http: httpx.AsyncClient

    async def get(
        self, path: str, key: tuple[str, str], tag: str | None = None, **params: str
    ) -> httpx.Response:
        """A signed GET of `/api/v1<path>`, with `If-None-Match: tag` when given."""
        url = str(httpx.URL(f"{self.url}/api/v1{path}", params=params or None))
        headers = {"Accept": "application/json"}
        if tag is not None:
            headers["If-None-Match"] = tag
        return await self.http.get(url, headers=self._signed("GET", url, b"", headers, key))

    async def post(self, path: str, key: tuple[str, str], body: bytes = b"{}") -> httpx.Response:
        url = f"{self.url}/api/v1{path}"
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        return await self.http.post(
            url, content=body, headers=self._signed("POST", url, body, headers, key)
        )

    def _signed(
        self, method: str, url: str, body: bytes, headers: dict[str, str], key: tuple[str, str]
    ) -> dict[str, str]:
        target = Target(self.url, "us-east-1", ReadOnlyCredentials(*key, None))
        return sign(target, method, url, body, headers)

    async def submit(self, key: tuple[str, str] = DANA) -> str:
        """A request of dana's, projected."""
        body = httpx.Request("POST", "/", json={"item_id": "postgresql-rds", "inputs": POSTGRES})
        answer = await self.post("/requests", key, body.content)
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["request_id"]
        await self.project("SELECT 1 FROM requests WHERE request_id = $1", request_id)
        return request_id

    async def project(self, until: str, *args: Any) -> None:
        """The projector catches up until the query `until` finds a row (a transaction open
        elsewhere on the server can hold back what it may read), and the gateway hears what it
        wrote."""
        deadline = time.monotonic() + 10
        while await Projector(self.pool).catch_up() >= 0 and not await self.pool.fetchval(
            until, *args
        ):
            assert time.monotonic() < deadline, f"never projected: {until} {args}"
            await asyncio.sleep(0.02)
        if self.app[WAKEUPS].listening:
            await self.heard()

    async def heard(self) -> None:
        """Return once the gateway's listener has heard every notification sent so far: they
        arrive in commit order, so once a marker sent now is heard, so is everything before."""
        marker = f"marker-{uuid.uuid4().hex}"
        with self.app[WAKEUPS].watching(marker) as woken:
            await self.pool.execute("SELECT pg_notify('pao_request_log', $1)", marker)
            await asyncio.wait_for(woken.wait(), 10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    """A gateway on a database of its own, serving a copy of the repository's catalog."""
    catalog = tmp_path_factory.mktemp("caching") / "catalog"
    shutil.copytree(REPO / "catalog", catalog)
    keys = KeyStore(
        [
            KeyEntry(
                access_key_id=DANA[0], secret_access_key=DANA[1], user="dana", teams=("payments",)
            ),
            KeyEntry(
                access_key_id=OLGA[0], secret_access_key=OLGA[1], user="olga", teams=("growth",)
            ),
            KeyEntry(
                access_key_id=ADMIN[0], secret_access_key=ADMIN[1], user="root", roles=("admin",)
            ),
        ]
    )
    async with fresh_database(postgres_server) as dsn:
        pool = await create_pool(dsn, min_size=1, max_size=10, application_name="pao-tests")
        store = EventStore(pool)
        parts = CatalogParts(source=DirectorySource(catalog), store=store)
        await refresh_catalog(source=parts.source, store=store, view=parts.view)
        settings = Settings(database_url=dsn, http_port=0, log_format="json")
        counting = CountingPool(pool)
        app = create_app(
            settings,
            keys=keys,
            pool=counting,  # type: ignore[arg-type]
            catalog_parts=parts,
        )
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        try:
            deadline = time.monotonic() + 10
            while not app[WAKEUPS].listening:
                assert time.monotonic() < deadline, "the gateway's listener never connected"
                await asyncio.sleep(0.02)
            async with httpx.AsyncClient(timeout=10) as http:
                yield Gateway(f"http://{host}:{port}", app, pool, counting, http)
        finally:
            await runner.cleanup()
            await pool.close()


def answered_304(route: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "pao_http_requests_total", {"route": route, "method": "GET", "status": "304"}
        )
        or 0.0
    )


async def test_a_request_read_is_tagged_and_revalidated_without_the_database(
    gateway: Gateway,
) -> None:
    request_id = await gateway.submit()
    path = f"/requests/{request_id}"

    first = await gateway.get(path, DANA)
    again = await gateway.get(path, DANA)
    assert first.status_code == again.status_code == 200
    tag = first.headers["ETag"]
    assert tag == again.headers["ETag"]
    assert tag == f'"request-{first.json()["stream_version"]}-full"'
    assert first.headers["Cache-Control"] == "private, no-cache"

    counted = answered_304("/api/v1/requests/{request_id}")
    uses = gateway.counting.uses
    unchanged = await gateway.get(path, DANA, tag)
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["ETag"] == tag
    assert unchanged.headers["Cache-Control"] == "private, no-cache"
    assert gateway.counting.uses == uses  # answered from memory
    assert answered_304("/api/v1/requests/{request_id}") == counted + 1

    # The status has its own tag, revalidated the same way.
    status = await gateway.get(f"{path}/status", DANA)
    assert status.status_code == 200
    assert status.headers["ETag"] != tag
    uses = gateway.counting.uses
    assert (await gateway.get(f"{path}/status", DANA, status.headers["ETag"])).status_code == 304
    assert gateway.counting.uses == uses


async def test_a_change_to_the_request_changes_its_tag(gateway: Gateway) -> None:
    request_id = await gateway.submit()
    path = f"/requests/{request_id}"
    before = await gateway.get(path, DANA)
    tag = before.headers["ETag"]
    status_tag = (await gateway.get(f"{path}/status", DANA)).headers["ETag"]

    aborted = await gateway.post(f"{path}/abort", DANA, b'{"reason": "not needed"}')
    assert aborted.status_code == 202, aborted.text
    await gateway.project(ABORTED, request_id)

    after = await gateway.get(path, DANA, tag)
    assert after.status_code == 200
    assert after.json()["status"] == "aborted"
    assert after.headers["ETag"] != tag
    status = await gateway.get(f"{path}/status", DANA, status_tag)
    assert status.status_code == 200
    assert status.json()["status"] == "aborted"
    # ...and the new tag is current again.
    assert (await gateway.get(path, DANA, after.headers["ETag"])).status_code == 304


async def test_a_304_is_answered_while_the_database_is_unreachable_and_a_miss_is_not(
    gateway: Gateway,
) -> None:
    known = await gateway.submit()
    tag = (await gateway.get(f"/requests/{known}", DANA)).headers["ETag"]
    unknown = await gateway.submit()  # projected, but this gateway never read it
    gateway.counting.away = True
    try:
        unchanged = await gateway.get(f"/requests/{known}", DANA, tag)
        assert unchanged.status_code == 304
        missed = await gateway.get(f"/requests/{unknown}", DANA, tag)
        assert missed.status_code == 503
        assert missed.json()["error"]["code"] == "PAO-SYS-002"
        stale = await gateway.get(f"/requests/{known}", DANA, '"request-0-full"')
        assert stale.status_code == 503  # a tag that is not current is read from the database
    finally:
        gateway.counting.away = False


async def test_another_users_tag_is_refused_as_without_one(gateway: Gateway) -> None:
    request_id = await gateway.submit()
    path = f"/requests/{request_id}"
    tag = (await gateway.get(path, DANA)).headers["ETag"]

    plain = await gateway.get(path, OLGA)
    tagged = await gateway.get(path, OLGA, tag)
    assert plain.status_code == tagged.status_code == 404
    assert tagged.json()["error"]["code"] == plain.json()["error"]["code"]
    assert tagged.json()["error"]["message"] == plain.json()["error"]["message"]
    assert "ETag" not in tagged.headers
    wildcard = await gateway.get(f"{path}/status", OLGA, "*")
    assert wildcard.status_code == 404
    # An admin may see it: the same tag is current for them.
    assert (await gateway.get(path, ADMIN, tag)).status_code == 304


async def listener_state(gateway: Gateway, *, listening: bool) -> None:
    deadline = time.monotonic() + 15
    while gateway.app[WAKEUPS].listening is not listening:
        assert time.monotonic() < deadline, f"the listener never became listening={listening}"
        await asyncio.sleep(0.02)


async def test_a_change_while_the_listener_was_away_is_not_answered_from_memory(
    gateway: Gateway,
) -> None:
    request_id = await gateway.submit()
    path = f"/requests/{request_id}"
    tag = (await gateway.get(path, DANA)).headers["ETag"]
    assert (await gateway.get(path, DANA, tag)).status_code == 304
    listener = gateway.app[WAKEUPS]._connection
    assert listener is not None

    # The listener's connection is cut; the request changes while nobody listens.
    await gateway.pool.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
    await listener_state(gateway, listening=False)
    uses = gateway.counting.uses
    assert (await gateway.get(path, DANA, tag)).status_code == 304  # read from the database
    assert gateway.counting.uses > uses
    aborted = await gateway.post(f"{path}/abort", DANA, b'{"reason": "while away"}')
    assert aborted.status_code == 202, aborted.text
    await gateway.project(ABORTED, request_id)
    await listener_state(gateway, listening=True)

    assert gateway.app[VERSIONS].known(f"request-{request_id}") is None
    after = await gateway.get(path, DANA, tag)
    assert after.status_code == 200
    assert after.json()["status"] == "aborted"
    uses = gateway.counting.uses
    assert (await gateway.get(path, DANA, after.headers["ETag"])).status_code == 304
    assert gateway.counting.uses == uses  # trusted again once listening


async def test_a_resource_is_revalidated_and_changes_with_its_requests(gateway: Gateway) -> None:
    request_id = await gateway.submit()
    found = (await gateway.get(f"/requests/{request_id}", DANA)).json()
    resource_id = found["resource_id"]
    provisioning = ev.ResourceProvisioning(
        resource_id=resource_id,
        request_id=request_id,
        item_id=found["item_id"],
        item_version=found["item_version"],
        item_hash="0" * 64,
        item_name=found["item_name"],
        owner_team=found["owner_team"],
        owner="dana",
        environment=found["environment"],
        inputs=found["inputs"],
    )
    await EventStore(gateway.pool).append(
        ev.resource_stream(resource_id), [provisioning.new(correlation_id=None, actor="dana")], 0
    )
    await gateway.project("SELECT 1 FROM resources WHERE resource_id = $1", resource_id)
    path = f"/resources/{resource_id}"

    first = await gateway.get(path, DANA)
    assert first.status_code == 200, first.text
    tag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "private, no-cache"
    uses = gateway.counting.uses
    assert (await gateway.get(path, DANA, tag)).status_code == 304
    assert gateway.counting.uses == uses
    assert (await gateway.get(path, OLGA, tag)).status_code == 404

    # Aborting its request changes the resource's answer (it lists its requests' statuses).
    aborted = await gateway.post(f"/requests/{request_id}/abort", DANA, b'{"reason": "no"}')
    assert aborted.status_code == 202, aborted.text
    await gateway.project(ABORTED, request_id)
    after = await gateway.get(path, DANA, tag)
    assert after.status_code == 200
    assert after.json()["requests"][0]["status"] == "aborted"
    assert after.headers["ETag"] != tag


async def test_catalog_reads_are_tagged_by_the_catalog_version(gateway: Gateway) -> None:
    listing = await gateway.get("/catalog", DANA, limit="5")
    item = await gateway.get("/catalog/items/s3-bucket", DANA)
    schema = await gateway.get("/catalog/items/s3-bucket/schema", DANA)
    tags = [r.headers["ETag"] for r in (listing, item, schema)]
    assert len(set(tags)) == 3
    assert (await gateway.get("/catalog", DANA, limit="5")).headers["ETag"] == tags[0]
    assert (await gateway.get("/catalog", DANA, limit="6")).headers["ETag"] != tags[0]
    uses = gateway.counting.uses
    assert (await gateway.get("/catalog", DANA, tags[0], limit="5")).status_code == 304
    assert (await gateway.get("/catalog/items/s3-bucket", DANA, tags[1])).status_code == 304
    assert (await gateway.get("/catalog/items/s3-bucket/schema", DANA, tags[2])).status_code == 304
    assert gateway.counting.uses == uses
    assert answered_304("/api/v1/catalog") >= 1

    # A new version of the catalog: every catalog tag changes.
    source = gateway.app[CATALOG].source
    assert isinstance(source, DirectorySource)
    bucket = source.root / "storage" / "s3-bucket.yaml"
    bucket.write_text(
        bucket.read_text()
        .replace("  name: S3 bucket\n", "  name: S3 bucket (private)\n")
        .replace("  version: 1.0.0\n", "  version: 1.0.1\n")
    )
    refreshed = await gateway.post("/catalog/refresh", ADMIN)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["status"] == "updated"

    after = [
        await gateway.get("/catalog", DANA, tags[0], limit="5"),
        await gateway.get("/catalog/items/s3-bucket", DANA, tags[1]),
        await gateway.get("/catalog/items/s3-bucket/schema", DANA, tags[2]),
    ]
    assert [r.status_code for r in after] == [200, 200, 200]
    assert after[1].json()["item"]["metadata"]["name"] == "S3 bucket (private)"
    assert all(r.headers["ETag"] not in tags for r in after)


async def test_devctl_watch_revalidates_and_keeps_its_last_status(
    gateway: Gateway, tmp_path: Path
) -> None:
    request_id = await gateway.submit()  # stays submitted: nothing here fulfils it
    config = devctl_profile(tmp_path / "config.yaml", gateway.url, DANA)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    revalidated = answered_304("/api/v1/requests/{request_id}/status")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "devctl"),
        "--verbose",
        "request",
        "status",
        request_id,
        "--watch",
        env={**environment, "PAO_CONFIG_FILE": str(config), "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while answered_304("/api/v1/requests/{request_id}/status") < revalidated + 2:
            assert time.monotonic() < deadline, "devctl never revalidated twice"
            await asyncio.sleep(0.05)
        aborted = await gateway.post(f"/requests/{request_id}/abort", DANA, b"{}")
        assert aborted.status_code == 202, aborted.text
        await gateway.project(ABORTED, request_id)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = err.decode().splitlines()

    assert proc.returncode == 1, lines  # the request ended, not completed
    calls = [line for line in lines if f"/requests/{request_id}/status ->" in line]
    assert len(calls) >= 4, calls
    assert "-> 200" in calls[0], calls
    assert all("-> 304" in line for line in calls[1:-1]), calls
    assert "-> 200" in calls[-1], calls
    assert sum(" submitted [0/" in line for line in lines) == 1  # printed once, then kept
    assert any(" aborted [0/" in line for line in lines), lines
