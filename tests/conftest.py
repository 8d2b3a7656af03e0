"""Session fixtures: a real PostgreSQL database and a real Kafka-protocol broker.

PostgreSQL: a fresh database on PAO_DATABASE_URL's server when set (CI uses the machine's), else
an embedded server in a temporary directory. Kafka: PAO_KAFKA_BOOTSTRAP when set, else a tansu
broker on a free loopback port. With `--containers` (`make test-containers`), both are instead
Docker containers started by testcontainers (PostgreSQL 16 and Apache Kafka in KRaft mode);
without a Docker engine those tests are skipped, with one line saying why. Everything started
here is stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from pao.catalog.bootstrap import CatalogParts
from pao.contracts.topics import ALL_TOPICS
from pao.devstack.aws import AwsIdentity
from pao.shared.database import create_pool, migrate
from pao.shared.eventstore import EventStore
from pao.shared.kafka import ensure_topics
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from pao.stack.runtime import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


POSTGRES_IMAGE = "postgres:16"
KAFKA_IMAGE = "apache/kafka:3.8.0"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--containers",
        action="store_true",
        help="run against PostgreSQL and Apache Kafka containers (testcontainers, needs Docker)",
    )


def _containers(config: pytest.Config) -> bool:
    return bool(config.getoption("--containers"))


def _no_docker() -> str | None:
    """Why containers cannot run here, or None when a Docker engine answers."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine to run containers
        return f"--containers: no Docker engine answers ({type(exc).__name__}); skipped"
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a Docker engine, the containers profile skips what needs one, in one line."""
    if not _containers(config) or (reason := _no_docker()) is None:
        return
    needing = {"postgres_server", "kafka_bootstrap"}
    skipped = [i for i in items if needing & set(getattr(i, "fixturenames", ()))]
    for item in skipped:
        item.add_marker(pytest.mark.skip(reason=reason))
    config.pluginmanager.get_plugin("terminalreporter").write_line(
        f"{reason}: {len(skipped)} tests need PostgreSQL or Kafka containers"
    )


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> AsyncIterator[str]:
    """A DSN of the PostgreSQL server tests create their databases on."""
    if _containers(pytestconfig):
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
        return
    server_dsn = os.environ.get("PAO_DATABASE_URL")
    if server_dsn:
        yield server_dsn
        return
    from pao.devstack.postgres import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    await embedded.start()
    try:
        yield embedded.dsn("postgres")
    finally:
        await embedded.stop()


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str) -> AsyncIterator[str]:
    """A new, migrated database on the server, dropped afterwards."""
    name = f"pao_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = _with_database(server_dsn, name)
        await migrate(dsn, MIGRATIONS)
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A migrated, empty database that lives for the session."""
    async with fresh_database(postgres_server) as dsn:
        yield dsn


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> AsyncIterator[str]:
    """A Kafka-protocol broker for the session."""
    if _containers(pytestconfig):
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    external = os.environ.get("PAO_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from pao.devstack.broker import EmbeddedBroker

    broker = EmbeddedBroker(tmp_path_factory.mktemp("tansu"))
    await broker.start()
    try:
        yield broker.bootstrap
    finally:
        await broker.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def own_broker(tmp_path: Path) -> AsyncIterator[str]:
    """A broker for one test alone: services started in other processes see only its events."""
    from pao.devstack.broker import EmbeddedBroker

    broker = EmbeddedBroker(tmp_path / "own-broker")
    await broker.start()
    try:
        yield broker.bootstrap
    finally:
        await broker.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def settings(database_url: str, kafka_bootstrap: str) -> Settings:
    """Settings pointing at the session's database and broker, tuned for tansu."""
    s = Settings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        kafka_enable_idempotence=False,
        kafka_session_timeout_ms=6_000,
        kafka_heartbeat_interval_ms=500,
        http_port=0,
        log_format="json",
        # Roles are the cluster's, and would outlive the test databases on the shared server;
        # test_terraform_isolation and the `pao up` stacks (clusters of their own) make them.
        terraform_state_roles="off",
    )
    await ensure_topics(s, ALL_TOPICS)
    return s


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=2, max_size=40, application_name="pao-tests")
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
def stream_id() -> str:
    """A stream of the request category nobody else writes to."""
    return f"request-{uuid.uuid4().hex}"


TEST_KEY_ID = "PAOTESTKEY0000000001"
TEST_SECRET = "integration-secret"
#: The `keys` fixture's developer (dana, team payments) and admin (root-admin), as (id, secret).
DANA = (TEST_KEY_ID, TEST_SECRET)
ADMIN = ("PAOADMINKEY000000001", "admin-secret")


@pytest.fixture(scope="session")
def keys() -> KeyStore:
    """The gateway's key store in tests: one developer, one admin."""
    return KeyStore(
        [
            KeyEntry(
                access_key_id=TEST_KEY_ID,
                secret_access_key=TEST_SECRET,
                user="dana",
                teams=("payments",),
            ),
            KeyEntry(
                access_key_id="PAOADMINKEY000000001",
                secret_access_key="admin-secret",
                user="root-admin",
                roles=("admin",),
            ),
        ]
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def catalog_parts(store: EventStore) -> CatalogParts:
    """The repository's catalog, loaded into the session's store."""
    from pao.catalog.refresh import refresh_catalog
    from pao.catalog.sources import DirectorySource

    parts = CatalogParts(source=DirectorySource(REPO / "catalog"), store=store)
    await parts.view.catch_up(store)
    await refresh_catalog(source=parts.source, store=store, view=parts.view)
    return parts


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(
    settings: Settings, keys: KeyStore, pool: asyncpg.Pool, catalog_parts: CatalogParts
) -> AsyncIterator[str]:
    """The gateway application on a free loopback port; yields its base URL."""
    from aiohttp import web

    from pao.gateway.app import create_app

    app = create_app(settings, keys=keys, pool=pool, catalog_parts=catalog_parts)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


def signed_client(endpoint: str, key_id: str = TEST_KEY_ID, secret: str = TEST_SECRET):
    """devctl's own client, signing with the given key."""
    from botocore.credentials import ReadOnlyCredentials

    from pao.devctl.client import PaoClient, Target

    return PaoClient(Target(endpoint, "us-east-1", ReadOnlyCredentials(key_id, secret, None)))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A moto server on a free loopback port: AWS APIs (STS, SSM) spoken over real HTTP, taking
    any credentials (tests sign with `testing`)."""
    from pao.devstack.aws import EmbeddedAws

    aws = EmbeddedAws(tmp_path_factory.mktemp("moto"), check_auth=False)
    await aws.start()
    try:
        yield aws.endpoint_url
    finally:
        await aws.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def aws_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AwsIdentity]:
    """moto as `pao up` runs it: signatures and IAM policies checked, the provisioner's key in a
    credentials file, the provisioning role to assume. Yields the bootstrapped identity."""
    from pao.devstack.aws import EmbeddedAws

    state = tmp_path_factory.mktemp("aws")
    aws = EmbeddedAws(state)
    await aws.start()
    try:
        yield await aws.bootstrap(state / "aws")
    finally:
        await aws.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def jira_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """An embedded JIRA server (jira820) for the session; yields its base URL."""
    from pao.devstack.jira import EmbeddedJira

    jira = EmbeddedJira(tmp_path_factory.mktemp("jira"))
    await jira.start()
    try:
        yield jira.base_url
    finally:
        await jira.stop()
