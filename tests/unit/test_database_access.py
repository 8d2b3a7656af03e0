"""The database's TLS and IAM settings as an operator meets them: what a bad value says, what
an IAM token looks like, when it is renewed, and what Terraform's state connection is given."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pydantic
import pytest

from pao.fulfillment.terraform import backend_conn_str
from pao.shared.database_access import (
    DatabaseAccess,
    DatabaseSettingsError,
    RdsAuthToken,
    rds_token_generator,
)
from pao.shared.settings import Settings

HOST = "pao.cluster-abc123.eu-west-1.rds.amazonaws.com"


@pytest.fixture
def ca_bundle(tmp_path: Path) -> Path:
    """A PEM file with one CA certificate in it (Python's own test CA is not at hand: make one)."""
    from support.tls_postgres import make_authority

    return make_authority(tmp_path, "bundle-ca").pem


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings()
    return str(refused.value)


def test_an_unknown_sslmode_is_refused_naming_the_variable_and_the_choices(monkeypatch):
    message = refusal(monkeypatch, PAO_DATABASE_SSLMODE="verify")
    assert "PAO_DATABASE_SSLMODE='verify'" in message
    assert "disable, prefer, require, verify-ca, verify-full" in message


def test_a_missing_or_unreadable_ca_bundle_is_refused(monkeypatch, tmp_path: Path):
    missing = refusal(monkeypatch, PAO_DATABASE_SSLROOTCERT=str(tmp_path / "nope.pem"))
    assert f"PAO_DATABASE_SSLROOTCERT={tmp_path / 'nope.pem'}: no such file" in missing
    assert "global-bundle.pem" in missing
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert "holds no PEM CA certificate" in refusal(monkeypatch, PAO_DATABASE_SSLROOTCERT=str(junk))


def test_iam_without_tls_is_refused_and_no_secret_of_the_environment_is_echoed(monkeypatch):
    message = refusal(
        monkeypatch,
        PAO_DATABASE_IAM_AUTH="true",
        PAO_DATABASE_SSLMODE="prefer",
        PAO_DATABASE_URL="postgresql://pao:hunter2-secret@db.internal/pao",
        PAO_JIRA_TOKEN="jira-token-secret",
    )
    assert "PAO_DATABASE_IAM_AUTH=true" in message
    assert "PAO_DATABASE_SSLMODE=verify-full" in message
    assert "hunter2" not in message
    assert "jira-token-secret" not in message


def test_iam_needs_a_dsn_with_host_and_user_and_without_a_password(ca_bundle: Path):
    settings = Settings(
        database_iam_auth=True, database_sslmode="verify-full", database_sslrootcert=ca_bundle
    )
    with pytest.raises(DatabaseSettingsError) as with_password:
        DatabaseAccess.from_settings(
            settings, f"postgresql://pao:hunter2@{HOST}/pao", variable="PAO_DATABASE_READ_URL"
        )
    assert "PAO_DATABASE_READ_URL carries a password" in str(with_password.value)
    assert "hunter2" not in str(with_password.value)
    with pytest.raises(DatabaseSettingsError, match="name the host and the user"):
        DatabaseAccess.from_settings(settings, f"postgresql://{HOST}/pao")


def test_writer_connections_accept_only_a_server_that_takes_writes():
    settings = Settings()
    writer = f"postgresql://pao@{HOST}/pao"
    assert DatabaseAccess.from_settings(settings, writer).connect_kwargs() == {
        "target_session_attrs": "read-write"
    }
    assert DatabaseAccess.from_settings(settings, writer, writer=False).connect_kwargs() == {}
    named = f"{writer}?target_session_attrs=any"
    assert DatabaseAccess.from_settings(settings, named).connect_kwargs() == {}


def test_each_sslmode_gives_asyncpg_what_libpq_would_do(ca_bundle: Path):
    assert DatabaseAccess().connect_kwargs() == {}  # the DSN's sslmode, else asyncpg's prefer
    assert DatabaseAccess(sslmode="disable").connect_kwargs() == {"ssl": False}
    assert DatabaseAccess(sslmode="prefer").connect_kwargs() == {"ssl": "prefer"}
    required = DatabaseAccess(sslmode="require").connect_kwargs()["ssl"]
    assert required.verify_mode == ssl.CERT_NONE
    assert not required.check_hostname
    chain = DatabaseAccess(sslmode="verify-ca", sslrootcert=ca_bundle).connect_kwargs()["ssl"]
    assert chain.verify_mode == ssl.CERT_REQUIRED
    assert not chain.check_hostname
    full = DatabaseAccess(sslmode="verify-full", sslrootcert=ca_bundle).connect_kwargs()["ssl"]
    assert full.verify_mode == ssl.CERT_REQUIRED
    assert full.check_hostname
    assert [c["subject"] for c in full.get_ca_certs()] == [((("commonName", "bundle-ca"),),)]


def token_client():
    return boto3.session.Session(
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region_name="eu-west-1",
    ).client("rds")


def test_an_iam_token_is_a_presigned_connect_for_the_host_port_and_user():
    token = rds_token_generator(HOST, 5432, "pao_app", "eu-west-1", client=token_client())()
    assert token.startswith(f"{HOST}:5432/?Action=connect&DBUser=pao_app&")
    query = parse_qs(urlsplit(f"https://{token}").query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["900"]
    credential = query["X-Amz-Credential"][0].split("/")
    assert credential[0] == "AKIAIOSFODNN7EXAMPLE"
    assert credential[2:] == ["eu-west-1", "rds-db", "aws4_request"]
    assert len(query["X-Amz-Signature"][0]) == 64


async def test_a_token_is_made_once_and_again_after_the_renewal_interval():
    now = [0.0]
    made: list[int] = []

    def generate() -> str:
        made.append(1)
        return f"token-{len(made)}"

    token = RdsAuthToken(generate, renew_after=600, clock=lambda: now[0])
    assert [await token(), await token()] == ["token-1", "token-1"]
    now[0] = 599.0
    assert await token() == "token-1"
    now[0] = 600.0
    assert await token() == "token-2"
    assert len(made) == 2
    assert "token" not in repr(token).replace("Token", "")


def test_terraform_state_gets_the_tls_settings_and_keeps_its_default_without_them(
    ca_bundle: Path,
):
    dsn = f"postgresql://pao@{HOST}/pao?sslmode=require"
    verified = backend_conn_str(
        dsn, access=DatabaseAccess(sslmode="verify-full", sslrootcert=ca_bundle)
    )
    assert parse_qs(urlsplit(verified).query) == {
        "sslmode": ["verify-full"],
        "sslrootcert": [str(ca_bundle)],
    }
    plain = f"postgresql://pao@{HOST}/pao"
    assert "sslmode=disable" in backend_conn_str(plain, access=DatabaseAccess())
    assert "sslmode=disable" in backend_conn_str(plain, access=DatabaseAccess(sslmode="prefer"))
