"""PAO reaching an Aurora-like PostgreSQL: TLS with a verified certificate, IAM tokens as
passwords, and both surviving the writer going away and coming back.

The server is a real PostgreSQL with TLS on and plain text refused; its certificate is signed by
a test CA and names `localhost` only. A second CA stands for a wrong bundle. IAM tokens are made
by boto3 from fixed fake credentials (a local presign); the server knows the token as the
role's SCRAM password, which is what RDS checks it against, in effect, when it validates it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import boto3
import pytest
import pytest_asyncio

from pao.shared.database import create_pool
from pao.shared.database_access import (
    DatabaseAccess,
    DatabaseTLSError,
    RdsAuthToken,
    rds_token_generator,
)
from pao.shared.settings import Settings
from support import eventually
from support.tls_postgres import (
    BINARIES,
    CERT_HOST,
    Authority,
    TlsPostgres,
    make_authority,
    server_folder,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

IAM_ROLE = "pao_iam"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Authority]:
    """The CA that signed the server's certificate, and one that did not."""
    folder = tmp_path_factory.mktemp("cas")
    return make_authority(folder, "pao-test-ca"), make_authority(folder, "someone-else-ca")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(authorities: tuple[Authority, Authority]) -> AsyncIterator[TlsPostgres]:
    if not (BINARIES / "postgres").exists():
        pytest.skip(f"no PostgreSQL built with TLS at {BINARIES} (apt-get install postgresql-15)")
    with server_folder() as folder:
        postgres = TlsPostgres(folder / "data", authorities[0])
        await postgres.start()
        try:
            yield postgres
        finally:
            await postgres.stop()


def verify_full(ca: Path) -> DatabaseAccess:
    return DatabaseAccess(sslmode="verify-full", sslrootcert=ca)


async def uses_tls(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))


async def test_verify_full_with_the_right_ca_connects_over_tls(
    server: TlsPostgres, authorities: tuple[Authority, Authority]
):
    conn = await verify_full(authorities[0].pem).connect(server.dsn(host=CERT_HOST))
    try:
        assert await uses_tls(conn)
    finally:
        await conn.close()


async def test_a_certificate_of_another_ca_is_refused_with_what_to_check(
    server: TlsPostgres, authorities: tuple[Authority, Authority]
):
    with pytest.raises(DatabaseTLSError) as refused:
        await verify_full(authorities[1].pem).connect(server.dsn(host=CERT_HOST))
    message = str(refused.value)
    assert "certificate verify failed" in message or "unable to get local issuer" in message
    assert f"PAO_DATABASE_SSLROOTCERT ({authorities[1].pem})" in message
    assert f"{CERT_HOST}:{server.port}" in message


async def test_a_host_the_certificate_does_not_name_is_refused_by_verify_full_only(
    server: TlsPostgres, authorities: tuple[Authority, Authority]
):
    with pytest.raises(DatabaseTLSError) as refused:
        await verify_full(authorities[0].pem).connect(server.dsn(host="127.0.0.1"))
    assert "mismatch" in str(refused.value)
    assert "name the host '127.0.0.1'" in str(refused.value)
    # verify-ca checks the chain and not the name: the same address connects.
    chain_only = DatabaseAccess(sslmode="verify-ca", sslrootcert=authorities[0].pem)
    conn = await chain_only.connect(server.dsn(host="127.0.0.1"))
    await conn.close()


async def test_the_server_takes_no_plain_text_so_the_tls_above_is_real(server: TlsPostgres):
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await DatabaseAccess(sslmode="disable").connect(server.dsn())


async def test_the_pool_keeps_verifying_after_the_writer_went_away_and_came_back(
    server: TlsPostgres, authorities: tuple[Authority, Authority]
):
    """A failover drops every connection; the pool's next ones (name resolved again) verify the
    new writer's certificate just the same."""
    settings = Settings(database_sslmode="verify-full", database_sslrootcert=authorities[0].pem)
    dsn = server.dsn(host=CERT_HOST)
    pool = await create_pool(
        dsn, min_size=1, max_size=2, access=DatabaseAccess.from_settings(settings, dsn)
    )
    try:
        async with pool.acquire() as conn:
            assert await uses_tls(conn)
        await server.stop()
        await server.start()

        async def answers() -> bool:
            try:
                async with pool.acquire() as conn:
                    return await uses_tls(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False

        assert await eventually(answers, timeout=10, what="the pool to reconnect over TLS")
    finally:
        await pool.close()


def rds_client(access_key_id: str):
    return boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key="fake-secret-for-tests",
        region_name=REGION,
    ).client("rds")


async def test_a_pool_logs_in_with_iam_tokens_and_presents_a_renewed_one_later(
    server: TlsPostgres, authorities: tuple[Authority, Authority]
):
    """The token is the password of each new connection (the DSN has none), and after the
    renewal interval new connections present the new token, while open ones carry on."""
    admin = await verify_full(authorities[0].pem).connect(server.dsn(host=CERT_HOST))
    await admin.execute(f"DROP ROLE IF EXISTS {IAM_ROLE}")
    await admin.execute(f"CREATE ROLE {IAM_ROLE} LOGIN")
    now = [1000.0]
    credentials = {"key": "AKIAFIRSTKEY00000001"}

    def generate() -> str:
        client = rds_client(credentials["key"])
        return rds_token_generator(CERT_HOST, server.port, IAM_ROLE, REGION, client=client)()

    token = RdsAuthToken(generate, clock=lambda: now[0])
    first = await token()
    await admin.execute(f"ALTER ROLE {IAM_ROLE} PASSWORD '{first}'")
    access = DatabaseAccess(sslmode="verify-full", sslrootcert=authorities[0].pem, token=token)
    pool = await create_pool(
        server.dsn(host=CERT_HOST, user=IAM_ROLE), min_size=1, max_size=2, access=access
    )
    try:
        assert await pool.fetchval("SELECT current_user") == IAM_ROLE
        held = await pool.acquire()  # a session opened with the first token

        # Ten minutes on, with other credentials (a role session renewed): a new token.
        now[0] += 600
        credentials["key"] = "AKIASECONDKEY0000002"
        with pytest.raises(asyncpg.InvalidPasswordError):
            await access.connect(server.dsn(host=CERT_HOST, user=IAM_ROLE))
        second = await token()
        assert second != first
        await admin.execute(f"ALTER ROLE {IAM_ROLE} PASSWORD '{second}'")
        await pool.expire_connections()
        await pool.release(held)
        assert await pool.fetchval("SELECT current_user") == IAM_ROLE
        assert await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", IAM_ROLE
        )
    finally:
        await pool.close()
        await admin.execute(f"DROP ROLE IF EXISTS {IAM_ROLE}")
        await admin.close()
