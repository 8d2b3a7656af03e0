"""Secret providers: Parameter Store (moto over HTTP), environment and file; values stay hidden."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import boto3
import pytest

from conftest import signed_client
from pao.shared.secrets import (
    EnvSecrets,
    FileSecrets,
    SecretNotFound,
    SsmSecrets,
    env_name,
    resolve_secrets,
    secret_provider,
)
from pao.shared.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "pl4nted-s3cret-0f-the-test"


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    return moto_endpoint


async def test_parameter_store_secrets_are_read_decrypted(aws: str) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(
        Name="/pao/tests/api-token", Value=SECRET, Type="SecureString", Overwrite=True
    )
    provider = secret_provider(Settings(secrets_provider="ssm", aws_region="us-east-1"))
    assert await provider.get("/pao/tests/api-token") == SECRET
    declared = {"api_token": {"path": "/pao/tests/api-token"}}
    assert await resolve_secrets(provider, declared, ["api_token"]) == {"api_token": SECRET}


async def test_a_missing_parameter_is_named_without_a_value(aws: str) -> None:
    with pytest.raises(SecretNotFound, match="/pao/tests/absent"):
        await SsmSecrets("us-east-1").get("/pao/tests/absent")


async def test_environment_and_file_providers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(env_name("/pao/db/password"), SECRET)
    assert env_name("/pao/db/password") == "PAO_SECRET_PAO_DB_PASSWORD"
    assert await EnvSecrets().get("/pao/db/password") == SECRET
    with pytest.raises(SecretNotFound, match="PAO_SECRET_PAO_NOPE"):
        await EnvSecrets().get("/pao/nope")
    file = tmp_path / "secrets.yaml"
    file.write_text(f"/pao/db/password: {SECRET}\n")
    assert await FileSecrets(file).get("/pao/db/password") == SECRET
    with pytest.raises(SecretNotFound) as caught:
        await FileSecrets(file).get("/pao/other")
    assert SECRET not in str(caught.value)


async def test_previews_and_validation_never_show_a_secret(
    gateway: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The provider holds the secret; previews never ask for it, and no answer or log shows it."""
    monkeypatch.setenv(env_name("/pao/observability/api-token"), SECRET)
    client = signed_client(gateway)
    try:
        answers = [
            await asyncio.to_thread(
                client.request,
                "POST",
                "/test/variables",
                body={
                    "template": "Bearer {{ secrets.api_token }}",
                    "context": {"secrets": {"api_token": SECRET}},
                },
            ),
            await asyncio.to_thread(
                client.request,
                "POST",
                "/validate/request",
                body={"item_id": "eks-application", "inputs": {"app_name": "x"}},
            ),
            await asyncio.to_thread(
                client.request,
                "POST",
                "/preview/form",
                body={"item_id": "postgresql-rds", "inputs": {}},
            ),
        ]
    finally:
        client.close()
    assert answers[0]["output"] == "Bearer ***"
    assert SECRET not in json.dumps(answers)
    out, err = capfd.readouterr()
    assert SECRET not in out + err
