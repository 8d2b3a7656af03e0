"""Secrets for templates (`secrets.<name>`): fetched only when an action runs, never stored.

Providers: AWS SSM Parameter Store (boto3 and the standard credential chain; PAO_AWS_ENDPOINT_URL,
or botocore's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SSM`, point it at another endpoint such
as the moto server of `pao up`), environment variables (`PAO_SECRET_<PATH>`, for development), or
a YAML file of path -> value. Values are cached briefly in memory. Nothing here logs a value;
errors name the path only.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import yaml

from pao.shared.settings import Settings


class SecretNotFound(LookupError):
    """No secret at this path (the message names the path, never a value)."""


class SecretProvider(Protocol):
    async def get(self, path: str) -> str: ...


def env_name(path: str) -> str:
    """The variable holding a secret path: /pao/db/password -> PAO_SECRET_PAO_DB_PASSWORD."""
    return "PAO_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_").upper()


class EnvSecrets:
    """Secrets from environment variables (development)."""

    async def get(self, path: str) -> str:
        value = os.environ.get(env_name(path))
        if value is None:
            raise SecretNotFound(f"secret {path} is not set (expected ${env_name(path)})")
        return value


class FileSecrets:
    """Secrets from a YAML file mapping paths to values (development, CI)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def get(self, path: str) -> str:
        data = yaml.safe_load(await asyncio.to_thread(self._path.read_text, encoding="utf-8"))
        if not isinstance(data, dict) or path not in data:
            raise SecretNotFound(f"secret {path} is not in {self._path}")
        return str(data[path])


class SsmSecrets:
    """AWS SSM Parameter Store, decrypting SecureString parameters."""

    def __init__(self, region: str, *, endpoint_url: str | None = None) -> None:
        import boto3

        # A session of its own: the credential chain is read now, not whenever boto3's default
        # session first happened to be used.
        self._client: Any = boto3.session.Session().client(
            "ssm", region_name=region, endpoint_url=endpoint_url
        )

    async def get(self, path: str) -> str:
        client = self._client

        def fetch() -> str:
            try:
                answer = client.get_parameter(Name=path, WithDecryption=True)
            except client.exceptions.ParameterNotFound:
                raise SecretNotFound(f"secret {path} is not in Parameter Store") from None
            return str(answer["Parameter"]["Value"])

        return await asyncio.to_thread(fetch)


class CachedSecrets:
    """Any provider, with values kept for a short time."""

    def __init__(self, inner: SecretProvider, ttl: float) -> None:
        self._inner = inner
        self._ttl = ttl
        self._values: dict[str, tuple[float, str]] = {}

    async def get(self, path: str) -> str:
        cached = self._values.get(path)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        value = await self._inner.get(path)
        self._values[path] = (time.monotonic(), value)
        return value


def secret_provider(settings: Settings) -> SecretProvider:
    """The provider the settings name."""
    inner: SecretProvider
    if settings.secrets_provider == "ssm":
        inner = SsmSecrets(settings.aws_region, endpoint_url=settings.aws_endpoint_url)
    elif settings.secrets_provider == "file":
        if settings.secrets_file is None:
            raise ValueError("PAO_SECRETS_PROVIDER=file needs PAO_SECRETS_FILE")
        inner = FileSecrets(settings.secrets_file)
    else:
        inner = EnvSecrets()
    return (
        CachedSecrets(inner, settings.secrets_cache_seconds)
        if settings.secrets_cache_seconds
        else inner
    )


async def resolve_secrets(
    provider: SecretProvider, declared: dict[str, dict[str, Any]], names: Iterable[str]
) -> dict[str, str]:
    """Values of the named secrets, by name, from their declared paths."""
    return {name: await provider.get(declared[name]["path"]) for name in names}
