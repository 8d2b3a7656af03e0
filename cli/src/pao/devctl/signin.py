"""Signing in with AWS credentials: a signed `sts:GetCallerIdentity` for a PAO session key.

devctl asks the gateway what to sign for (`GET /api/v1/auth/sign-in`), signs a GetCallerIdentity
call with the caller's AWS credentials (any: SSO, an assumed role, an instance profile, keys) and
hands it over unsent; the gateway has STS check it and answers with a session key, which devctl
keeps in its cache (readable by its owner only) until it expires and signs every call with.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from pao.contracts import errors as codes
from pao.contracts.auth import NONCE_HEADER
from pao.devctl.errors import CliError

#: A cached session closer than this to its end is not used; devctl signs in again.
MARGIN = timedelta(seconds=60)
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass(frozen=True)
class CachedSession:
    """A session key as devctl keeps it."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    expires_at: datetime
    user: str
    principal_arn: str

    @property
    def credentials(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials(self.access_key_id, self.secret_access_key, None)

    def usable(self, now: datetime | None = None) -> bool:
        return self.expires_at - MARGIN > (now or datetime.now(UTC))


def cache_dir() -> Path:
    """`$PAO_CACHE_DIR`, else `$XDG_CACHE_HOME/pao/sessions` (~/.cache by default)."""
    explicit = os.environ.get("PAO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pao" / "sessions"


def cache_file(endpoint: str, role_arn: str | None, aws_profile: str | None) -> Path:
    """One session per endpoint, role and AWS profile: each signs in as someone else."""
    key = "\0".join((endpoint.rstrip("/"), role_arn or "", aws_profile or ""))
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def load_session(path: Path) -> CachedSession | None:
    """The cached session at `path`, if there is a readable one that is still usable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        session = CachedSession(
            endpoint=raw["endpoint"],
            access_key_id=raw["access_key_id"],
            secret_access_key=raw["secret_access_key"],
            expires_at=datetime.fromisoformat(raw["expires_at"]),
            user=raw["user"],
            principal_arn=raw["principal_arn"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return session if session.usable() else None


def save_session(path: Path, session: CachedSession) -> None:
    """Write the session readable by its owner only (it holds a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(
            {
                "endpoint": session.endpoint,
                "access_key_id": session.access_key_id,
                "secret_access_key": session.secret_access_key,
                "expires_at": session.expires_at.isoformat(),
                "user": session.user,
                "principal_arn": session.principal_arn,
            },
            out,
        )
    tmp.replace(path)


def make_proof(credentials: ReadOnlyCredentials, info: dict[str, Any]) -> dict[str, Any]:
    """A GetCallerIdentity call signed for the STS endpoint and the audience `info` names,
    as the body of `POST /api/v1/auth/sign-in`."""
    body = str(info["body"])
    request = AWSRequest(
        method="POST",
        url=str(info["sts_endpoint_url"]).rstrip("/") + "/",
        data=body.encode(),
        headers={
            "Content-Type": FORM,
            str(info["audience_header"]): str(info["audience"]),
            NONCE_HEADER: secrets.token_hex(16),
        },
    )
    signer = SigV4Auth(
        Credentials(credentials.access_key, credentials.secret_key, credentials.token),
        "sts",
        str(info["sts_region"]),
    )
    signer.add_auth(request)
    return {"headers": dict(request.headers.items()), "body": body}


def sign_in(endpoint: str, credentials: ReadOnlyCredentials, *, verbose: bool = False) -> Any:
    """Sign in at `endpoint` with AWS credentials; the session as the gateway answers it."""
    from pao.devctl.client import PaoClient, Target

    client = PaoClient(Target(endpoint, "us-east-1", None), verbose=verbose)
    try:
        info = client.request("GET", "/auth/sign-in")
        return client.request("POST", "/auth/sign-in", body=make_proof(credentials, info))
    except CliError as exc:
        if exc.code == codes.ROUTE_NOT_FOUND.code:
            raise CliError(
                exc.code,
                f"{endpoint} does not offer sign-in with AWS credentials",
                "Use a static key (a profile's access_key_id) or call it through API Gateway.",
                correlation_id=exc.correlation_id,
            ) from exc
        raise
    finally:
        client.close()


def cached_from_answer(endpoint: str, answer: dict[str, Any]) -> CachedSession:
    return CachedSession(
        endpoint=endpoint,
        access_key_id=answer["access_key_id"],
        secret_access_key=answer["secret_access_key"],
        expires_at=datetime.fromisoformat(answer["expires_at"]),
        user=answer["user"],
        principal_arn=answer["principal_arn"],
    )
