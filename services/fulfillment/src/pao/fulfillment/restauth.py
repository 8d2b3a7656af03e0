"""How a REST action's call proves who makes it: a bearer token, basic auth, an HMAC or AWS SigV4.

Each scheme turns the call as it will be sent (method, encoded URL, headers, body bytes) into the
headers to add, so a redirect to the same host is signed again for its own URL. AWS credentials
come from the action's templates (normally secrets) or else the worker's standard credential
chain; a role to assume is assumed through STS with them, and its credentials are kept until
shortly before they expire, so a busy item does not call STS for every request. botocore does
the signing and the STS call; its calls block, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from aiohttp import encode_basic_auth
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from pao.fulfillment.executors import ActionError, RunKey

#: Assumed credentials are used until this many seconds before they expire.
RENEW_MARGIN = 300.0
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512, "sha1": hashlib.sha1}
_TRANSIENT_AWS_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable"}
)


@dataclass(frozen=True)
class Outgoing:
    """A call as it goes on the wire: what a signature covers."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class AwsTarget:
    """Where an AWS call goes and how its signature is scoped."""

    base_url: str | None
    signing_region: str
    signing_name: str


class AwsAccess:
    """AWS endpoints and credentials for SigV4-signed REST actions."""

    def __init__(self, *, region: str, endpoint_url: str | None = None) -> None:
        self._region = region
        self._endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self._session = botocore.session.Session()
        self._assumed: dict[tuple[str, ...], tuple[ReadOnlyCredentials, float]] = {}

    def region_of(self, auth: dict[str, Any], env: dict[str, Any]) -> str:
        """The action's region, else its environment's, else the installation's."""
        return str(auth.get("region") or env.get("aws_region") or self._region)

    def target(self, service: str, region: str) -> AwsTarget:
        """The service's endpoint: the configured one, else botocore's standard endpoint for the
        region (a global service such as iam or route53 signs for its own region)."""
        if self._endpoint_url:
            return AwsTarget(self._endpoint_url, region, service)
        resolver = self._session.get_component("endpoint_resolver")
        found = resolver.construct_endpoint(service, region)
        if not found or not found.get("hostname"):
            return AwsTarget(None, region, service)
        scope = found.get("credentialScope") or {}
        return AwsTarget(
            f"https://{found['hostname']}",
            str(scope.get("region") or region),
            str(scope.get("service") or service),
        )

    async def credentials(
        self, auth: dict[str, Any], *, key: RunKey, env: dict[str, Any], region: str
    ) -> ReadOnlyCredentials:
        """The credentials the call is signed with: the role's when one is to be assumed."""
        base = await self._base(auth)
        role_arn = auth.get("role_arn") or env.get("aws_role_arn")
        if not role_arn:
            return base
        session_name = str(auth.get("session_name") or f"pao-{key.request_id[:8]}")
        external_id = str(auth.get("external_id") or "")
        cache_key = (str(role_arn), external_id, session_name, base.access_key, region)
        cached = self._assumed.get(cache_key)
        if cached is not None and cached[1] - time.time() > RENEW_MARGIN:
            return cached[0]
        assumed, expires = await asyncio.to_thread(
            self._assume, base, str(role_arn), session_name, external_id, region
        )
        # One entry per role session (by default one per request): forget those run out.
        now = time.time()
        self._assumed = {k: v for k, v in self._assumed.items() if v[1] - now > RENEW_MARGIN}
        self._assumed[cache_key] = (assumed, expires)
        return assumed

    async def _base(self, auth: dict[str, Any]) -> ReadOnlyCredentials:
        if auth.get("access_key_id"):
            return ReadOnlyCredentials(
                str(auth["access_key_id"]),
                str(auth.get("secret_access_key") or ""),
                str(auth["session_token"]) if auth.get("session_token") else None,
            )

        def chain() -> ReadOnlyCredentials | None:
            found = self._session.get_credentials()
            return found.get_frozen_credentials() if found is not None else None

        try:
            frozen = await asyncio.to_thread(chain)
        except BotoCoreError as exc:
            raise ActionError(
                f"AWS credentials could not be loaded: {type(exc).__name__}", transient=True
            ) from exc
        if frozen is None:
            raise ActionError(
                "no AWS credentials: the worker's standard credential chain found none "
                "(or give auth.access_key_id and auth.secret_access_key)",
                transient=False,
            )
        return frozen

    def _assume(
        self,
        base: ReadOnlyCredentials,
        role_arn: str,
        session_name: str,
        external_id: str,
        region: str,
    ) -> tuple[ReadOnlyCredentials, float]:
        sts = self._session.create_client(
            "sts",
            region_name=region,
            endpoint_url=self._endpoint_url,
            aws_access_key_id=base.access_key,
            aws_secret_access_key=base.secret_key,
            aws_session_token=base.token,
        )
        request: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
        if external_id:
            request["ExternalId"] = external_id
        try:
            answer = sts.assume_role(**request)["Credentials"]
        except ClientError as exc:
            error = exc.response.get("Error") or {}
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            code = str(error.get("Code") or "error")
            raise ActionError(
                f"AWS STS AssumeRole of {role_arn} failed: {code}",
                transient=code in _TRANSIENT_AWS_CODES or status >= 500 or status == 429,
            ) from None
        except NoCredentialsError:
            raise ActionError(
                f"AWS STS AssumeRole of {role_arn}: no base credentials", transient=False
            ) from None
        except BotoCoreError as exc:
            raise ActionError(
                f"AWS STS AssumeRole of {role_arn} did not answer: {type(exc).__name__}",
                transient=True,
            ) from None
        finally:
            sts.close()
        credentials = ReadOnlyCredentials(
            answer["AccessKeyId"], answer["SecretAccessKey"], answer.get("SessionToken")
        )
        return credentials, answer["Expiration"].timestamp()


def sigv4_headers(
    call: Outgoing, credentials: ReadOnlyCredentials, *, service: str, region: str
) -> dict[str, str]:
    """The call's headers signed by botocore (S3 also signs its payload hash)."""
    request = AWSRequest(method=call.method, url=call.url, data=call.body, headers=call.headers)
    signer = S3SigV4Auth if service == "s3" else SigV4Auth
    signer(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_header(username: str, password: str) -> dict[str, str]:
    if ":" in username:
        raise ValueError("a basic auth username may not contain ':'")
    return {"Authorization": encode_basic_auth(username, password)}


def hmac_headers(call: Outgoing, auth: dict[str, Any], now: float | None = None) -> dict[str, str]:
    """The signature of the parts `auth.signed` names, joined by line feeds, and its timestamp."""
    signed = list(auth.get("signed") or ["body"])
    timestamp = str(int(now if now is not None else time.time()))
    parts = urlsplit(call.url)
    values = {
        "method": call.method.encode(),
        "path": (parts.path or "/").encode(),
        "query": parts.query.encode(),
        "timestamp": timestamp.encode(),
        "body": call.body,
    }
    message = b"\n".join(values[name] for name in signed)
    algorithm = _DIGESTS.get(str(auth.get("algorithm") or "sha256"))
    if algorithm is None:
        raise ActionError(
            f"hmac algorithm {auth.get('algorithm')} is not one of {', '.join(_DIGESTS)}",
            transient=False,
        )
    digest = hmac.new(str(auth["secret"]).encode(), message, algorithm).digest()
    encoded = (
        base64.b64encode(digest).decode() if auth.get("encoding") == "base64" else digest.hex()
    )
    headers = {str(auth.get("header") or "X-Signature"): f"{auth.get('prefix') or ''}{encoded}"}
    if "timestamp" in signed:
        headers[str(auth.get("timestamp_header") or "X-Timestamp")] = timestamp
    return headers
