"""The whole gateway on a primary and its streaming replica, over verified TLS, as on Aurora
with PAO_DATABASE_URL on the writer endpoint and PAO_DATABASE_READ_URL on the reader's.

Replay on the replica is paused while Dana submits a request: she reads it back at once (the
writer), while the list does not show it until replay resumes (the reader). Every connection
of the stack verifies the servers' certificate (`verify-full` against the test CA).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from conftest import DANA, fresh_database
from pao.shared.database_access import DatabaseAccess
from pao.shared.keystore import KeyStore
from pao.shared.outages import database_away
from pao.shared.settings import Settings
from support import eventually
from support.stack import Stack, running_stack, signed_call
from support.tls_postgres import (
    BINARIES,
    CERT_HOST,
    Authority,
    TlsPostgres,
    make_authority,
    server_folder,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

POSTGRES = {
    "db_name": "replicated",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "ledger@example.com",
}


@dataclass
class Cluster:
    stack: Stack
    replica: TlsPostgres
    database: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster(settings: Settings, keys: KeyStore) -> AsyncIterator[Cluster]:
    if not (BINARIES / "pg_basebackup").exists():
        pytest.skip(f"no PostgreSQL built with TLS at {BINARIES} (apt-get install postgresql-15)")
    with server_folder() as folder:
        async with _cluster(settings, keys, folder) as running:
            yield running


@contextlib.asynccontextmanager
async def _cluster(settings: Settings, keys: KeyStore, folder: Path) -> AsyncIterator[Cluster]:
    authority: Authority = make_authority(folder, "pao-cluster-ca")
    primary = TlsPostgres(folder / "primary", authority)
    await primary.start()
    replica = TlsPostgres(folder / "replica", authority, primary=primary)
    try:
        await replica.start()
        async with fresh_database(primary.dsn()) as dsn:
            database = urlsplit(dsn).path.lstrip("/")
            await _replayed(replica, database)
            own = settings.model_copy(
                update={
                    "database_url": primary.dsn(database, host=CERT_HOST),
                    "database_read_url": replica.dsn(database, host=CERT_HOST),
                    "database_sslmode": "verify-full",
                    "database_sslrootcert": authority.pem,
                }
            )
            async with running_stack(
                own, keys, services=("gateway", "projector"), data_dir=folder / "pao"
            ) as stack:
                yield Cluster(stack, replica, database)
    finally:
        await replica.stop()
        await primary.stop()


async def _replayed(replica: TlsPostgres, database: str) -> None:
    """Wait until the replica has the migrated database."""

    async def migrated() -> bool:
        try:
            conn = await asyncpg.connect(replica.dsn(database), ssl="require")
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            return bool(await conn.fetchval("SELECT to_regclass('requests') IS NOT NULL"))
        finally:
            await conn.close()

    await eventually(migrated, timeout=10, what="the replica to replay the migrations")


async def api(stack: Stack, method: str, path: str, **kw: Any):
    return await signed_call(stack.url, method, path, DANA, **kw)


async def test_a_client_reads_its_own_request_at_once_and_lists_follow_the_replica(
    cluster: Cluster,
):
    stack = cluster.stack
    replica = await asyncpg.connect(cluster.replica.dsn(cluster.database), ssl="require")
    try:
        await replica.execute("SELECT pg_wal_replay_pause()")
        submitted = await api(
            stack, "POST", "/requests", body={"item_id": "postgresql-rds", "inputs": POSTGRES}
        )
        request_id = submitted["request_id"]
        assert (await api(stack, "GET", f"/requests/{request_id}"))["request_id"] == request_id
        assert (await api(stack, "GET", "/requests"))["total"] == 0  # the paused replica

        await replica.execute("SELECT pg_wal_replay_resume()")

        async def listed() -> bool:
            rows = (await api(stack, "GET", "/requests"))["requests"]
            return [r["request_id"] for r in rows] == [request_id]

        assert await eventually(listed, timeout=10, what="the list to show the request")
        sessions = await replica.fetch(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() "
            "AND a.pid <> pg_backend_pid()"
        )
    finally:
        await replica.execute("SELECT pg_wal_replay_resume()")
        await replica.close()
    assert {(r["application_name"], r["ssl"]) for r in sessions} == {("pao-gateway-reader", True)}


async def test_a_writer_connection_landing_on_a_replica_is_refused_as_an_outage(cluster: Cluster):
    """After a failover, a name still resolving to the demoted instance is not written through:
    the connection is refused at once, and the caller waits and tries again."""
    settings = cluster.stack.settings
    on_replica = cluster.replica.dsn(cluster.database, host=CERT_HOST)
    with pytest.raises(asyncpg.TargetServerAttributeNotMatched) as refused:
        await DatabaseAccess.from_settings(settings, on_replica).connect(on_replica)
    assert database_away(refused.value)
    reader = DatabaseAccess.from_settings(settings, on_replica, writer=False)
    conn = await reader.connect(on_replica)
    await conn.close()
