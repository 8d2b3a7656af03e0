"""PAO's own secrets in Parameter Store: `pao secrets init` against moto (signatures checked)
creates SecureStrings without ever showing a value, keeps them on a second run, and PAO reads
them back through its secret provider; the webhook secret comes through the provider too."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from conftest import BIN
from pao.devstack.aws import AwsIdentity, use_identity
from pao.shared.secrets import env_name, secret_provider
from pao.shared.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PATHS = ("/pao/jira/api-token", "/pao/github/token", "/pao/github/webhook-secret")


def values() -> dict[str, str]:
    """Fresh values for the three variables `pao secrets init` reads."""
    return {
        "PAO_JIRA_TOKEN": f"jira-{uuid.uuid4().hex}",
        "PAO_GITHUB_TOKEN": f"ghp_{uuid.uuid4().hex}",
        "PAO_GITHUB_WEBHOOK_SECRET": f"hook-{uuid.uuid4().hex}",
    }


def pao_secrets_init(
    aws: AwsIdentity, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it: AWS through the standard chain, debug logging on
    (botocore logs request bodies at debug), no terminal to prompt in."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    use_identity(aws, environ)
    environ |= {
        "PAO_AWS_ENDPOINT_URL": aws.endpoint_url,
        "PAO_LOG_LEVEL": "debug",
        "PAO_LOG_FORMAT": "json",
        **(env or {}),
    }
    return subprocess.run(
        [str(BIN / "pao"), "secrets", "init", *args],
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ssm(aws: AwsIdentity):
    """A Parameter Store client with the stack's own key, read from its credentials file."""
    return aws.session().client("ssm", region_name=aws.region, endpoint_url=aws.endpoint_url)


def report(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return {p["path"]: p for p in json.loads(result.stdout)["parameters"]}


async def test_init_creates_secure_strings_shows_no_value_and_keeps_them_on_a_second_run(
    aws_stack: AwsIdentity, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = values()
    first = pao_secrets_init(aws_stack, "--output", "json", env=given)

    created = report(first)
    assert set(created) == set(PATHS)
    assert {p["status"] for p in created.values()} == {"created"}
    assert {p["type"] for p in created.values()} == {"SecureString"}
    for value in given.values():
        assert value not in first.stdout + first.stderr
    client = ssm(aws_stack)
    for path, variable in zip(PATHS, given, strict=True):
        stored = client.get_parameter(Name=path, WithDecryption=True)["Parameter"]
        assert (stored["Type"], stored["Value"], stored["Version"]) == (
            "SecureString",
            given[variable],
            1,
        )

    second = pao_secrets_init(aws_stack, "--output", "json", env=values())

    kept = report(second)
    assert {p["status"] for p in kept.values()} == {"exists, kept"}
    assert {p["version"] for p in kept.values()} == {1}
    stored = client.get_parameter(Name=PATHS[0], WithDecryption=True)["Parameter"]["Value"]
    assert stored == given["PAO_JIRA_TOKEN"]

    # PAO reads the token back through its provider, as the fulfilment service does at start;
    # only the setting says where Parameter Store is (the config file naming moto is not read).
    environ = dict(os.environ)
    use_identity(aws_stack, environ)
    for name in set(os.environ) - set(environ):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", environ["AWS_SHARED_CREDENTIALS_FILE"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SSM"):
        monkeypatch.delenv(name, raising=False)
    provider = secret_provider(
        Settings(
            secrets_provider="ssm",
            aws_endpoint_url=aws_stack.endpoint_url,
            aws_region=aws_stack.region,
        )
    )
    assert await provider.get("/pao/jira/api-token") == given["PAO_JIRA_TOKEN"]


async def test_overwrite_replaces_a_generated_webhook_secret_without_printing_it(
    aws_stack: AwsIdentity,
) -> None:
    prefix = f"/pao-{uuid.uuid4().hex[:8]}"
    paths = {
        "PAO_JIRA_TOKEN_SECRET": f"{prefix}/jira/api-token",
        "PAO_CATALOG_GIT_TOKEN_SECRET": f"{prefix}/github/token",
        "PAO_GITHUB_WEBHOOK_SECRET_PATH": f"{prefix}/github/webhook-secret",
    }
    given = values()
    del given["PAO_GITHUB_WEBHOOK_SECRET"]
    client = ssm(aws_stack)
    hook = paths["PAO_GITHUB_WEBHOOK_SECRET_PATH"]

    first = report(pao_secrets_init(aws_stack, "--generate", "-o", "json", env=paths | given))
    generated = client.get_parameter(Name=hook, WithDecryption=True)["Parameter"]["Value"]
    result = pao_secrets_init(
        aws_stack, "--generate", "--overwrite", "-o", "json", env=paths | given
    )
    again = report(result)

    assert (first[hook]["status"], first[hook]["source"]) == ("created", "generated")
    assert (again[hook]["status"], again[hook]["version"]) == ("replaced", 2)
    replaced = client.get_parameter(Name=hook, WithDecryption=True)["Parameter"]["Value"]
    assert len(generated) >= 32
    assert replaced != generated
    assert generated not in result.stdout + result.stderr
    assert replaced not in result.stdout + result.stderr


async def test_a_secret_without_a_value_or_terminal_is_reported_missing(
    aws_stack: AwsIdentity,
) -> None:
    prefix = f"/pao-{uuid.uuid4().hex[:8]}"
    env = {
        "PAO_JIRA_TOKEN_SECRET": f"{prefix}/jira/api-token",
        "PAO_CATALOG_GIT_TOKEN_SECRET": f"{prefix}/github/token",
        "PAO_GITHUB_WEBHOOK_SECRET_PATH": f"{prefix}/github/webhook-secret",
        "PAO_GITHUB_WEBHOOK_SECRET": "only-this-one",
    }

    result = pao_secrets_init(aws_stack, env=env)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(
        f"{prefix}/jira/api-token" in x and "missing (set $PAO_JIRA_TOKEN)" in x for x in lines
    )
    assert any(f"{prefix}/github/webhook-secret" in x and "created" in x for x in lines)
    assert "only-this-one" not in result.stdout + result.stderr


async def test_the_webhook_secret_is_read_through_the_secret_provider(
    gateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No PAO_GITHUB_WEBHOOK_SECRET: the gateway reads PAO_GITHUB_WEBHOOK_SECRET_PATH."""
    secret = f"hook-{uuid.uuid4().hex}"
    body = b'{"zen": "Design for failure."}'

    async def ping(signed_with: str) -> int:
        signature = "sha256=" + hmac.new(signed_with.encode(), body, hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{gateway}/api/v1/webhooks/github",
                data=body,
                headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": signature},
            ) as response,
        ):
            return response.status

    assert await ping(secret) == 404  # not configured yet
    monkeypatch.setenv(env_name("/pao/github/webhook-secret"), secret)
    assert await ping(secret) == 200
    assert await ping("another-secret") == 401
