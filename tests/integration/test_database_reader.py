"""The gateway reading lists from Aurora's reader endpoint while what a client reads back by id
comes from the writer.

The "reader" is a second database with the same schema that never receives the writer's
changes: a replica as far behind as one can be. Whatever a list shows comes from it, so a list
that stays empty while the request just submitted reads back at once tells the two pools apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from conftest import ADMIN, DANA, fresh_database
from pao.shared.database import create_pool
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.stack import Stack, fresh_stack, signed_call

pytestmark = pytest.mark.asyncio(loop_scope="session")

POSTGRES = {
    "db_name": "ledger",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "ledger@example.com",
}


@dataclass
class Replicated:
    stack: Stack
    reader_dsn: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replicated(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Replicated]:
    async with fresh_database(postgres_server) as reader_dsn:
        with_reader = settings.model_copy(update={"database_read_url": reader_dsn})
        async with fresh_stack(
            postgres_server,
            with_reader,
            keys,
            services=("gateway", "projector"),
            data_dir=tmp_path_factory.mktemp("reader"),
        ) as stack:
            yield Replicated(stack, reader_dsn)


async def api(stack: Stack, method: str, path: str, key: tuple[str, str] = DANA, **kw: Any):
    return await signed_call(stack.url, method, path, key, **kw)


async def test_a_submitted_request_reads_back_at_once_while_lists_come_from_the_reader(
    replicated: Replicated,
):
    stack = replicated.stack
    submitted = await api(
        stack, "POST", "/requests", body={"item_id": "postgresql-rds", "inputs": POSTGRES}
    )
    request_id = submitted["request_id"]

    # By id: the writer, so the client sees what it just did.
    assert (await api(stack, "GET", f"/requests/{request_id}"))["request_id"] == request_id
    assert (await api(stack, "GET", f"/requests/{request_id}/status"))["status"]
    # Lists, searches and figures: the reader, which has not seen the request.
    assert (await api(stack, "GET", "/requests"))["total"] == 0
    assert (await api(stack, "GET", "/resources"))["total"] == 0
    assert (await api(stack, "GET", "/approvals"))["approvals"] == []
    assert (await api(stack, "GET", "/audit", ADMIN))["total"] == 0
    assert (await api(stack, "GET", "/stats", ADMIN))["generated_at"]

    # The writer holds the audit of the submit, the reader nothing.
    assert await stack.pool.fetchval(
        "SELECT count(*) FROM gateway_audit WHERE target_id = $1", request_id
    )
    # Once the replica catches up (the request's row copied over), the list shows it.
    row = await stack.pool.fetchrow("SELECT * FROM requests WHERE request_id = $1", request_id)
    reader = await create_pool(replicated.reader_dsn, min_size=1, max_size=1)
    try:
        assert not await reader.fetchval("SELECT count(*) FROM gateway_audit")
        columns = ", ".join(row.keys())
        values = ", ".join(f"${n}" for n in range(1, len(row) + 1))
        await reader.execute(f"INSERT INTO requests ({columns}) VALUES ({values})", *row.values())
    finally:
        await reader.close()
    listed = await api(stack, "GET", "/requests")
    assert [r["request_id"] for r in listed["requests"]] == [request_id]


async def test_the_reader_pool_is_the_gateways_own_and_named_so(replicated: Replicated):
    """An operator finds the gateway's reader sessions on the reader's database by name."""
    await api(replicated.stack, "GET", "/requests")
    reader = await asyncpg.connect(replicated.reader_dsn)
    try:
        names = await reader.fetch(
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = "
            "current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await reader.close()
    assert [r["application_name"] for r in names] == ["pao-gateway-reader"]
