"""The REST client: resolves credentials, signs each call with SigV4, maps failures to CliError."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session

from pao.contracts import errors as codes
from pao.devctl.errors import CliError
from pao.devctl.profiles import Profile, config_path, load_config
from pao.devctl.signin import (
    CachedSession,
    cache_file,
    cached_from_answer,
    load_session,
    save_session,
    sign_in,
)

SERVICE = "execute-api"
DEFAULT_TIMEOUT = 30.0
#: How much of a response body --debug shows.
DEBUG_BODY_CHARS = 4096
#: JSON keys whose values --debug never shows (a sign-in answer carries a secret key).
_SECRET_KEY = re.compile(r"secret|password|token|authorization|signature", re.IGNORECASE)
_SIGNED_HEADERS = re.compile(r"SignedHeaders=([^,\s]+)")
#: Where botocore found AWS credentials, in the words `devctl doctor` uses.
_AWS_SOURCES = {
    "env": "environment variables (AWS_ACCESS_KEY_ID)",
    "shared-credentials-file": "the AWS credentials file",
    "config-file": "the AWS config file",
    "sso": "AWS SSO (IAM Identity Center)",
    "assume-role": "an AWS profile's role",
    "assume-role-with-web-identity": "a web identity token",
    "custom-process": "an AWS credential_process",
    "container-role": "the container's role",
    "iam-role": "the instance profile",
}


@dataclass(frozen=True)
class Target:
    """Where to send calls and how to sign them."""

    endpoint: str
    region: str
    credentials: ReadOnlyCredentials | None  # None only when signing is switched off


def _assume_role(base: Session, role_arn: str, region: str) -> ReadOnlyCredentials:
    try:
        sts = base.create_client("sts", region_name=region)
        answer = sts.assume_role(
            RoleArn=role_arn, RoleSessionName=f"devctl-{uuid.uuid4().hex[:12]}"
        )
    except (BotoCoreError, ClientError) as exc:
        raise CliError(
            codes.NO_CREDENTIALS.code,
            f"cannot assume role {role_arn}: {exc}",
            "Check that your base credentials may call sts:AssumeRole on it.",
        ) from exc
    c = answer["Credentials"]
    return ReadOnlyCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])


@dataclass(frozen=True)
class Where:
    """Endpoint, region and how to find credentials, from flags, variables and the profile."""

    endpoint: str
    region: str
    profile: Profile | None
    role_arn: str | None
    aws_profile: str | None
    profile_name: str | None = None
    #: where the endpoint came from: "--endpoint", "PAO_ENDPOINT" or "profile NAME"
    endpoint_from: str = "--endpoint"

    @property
    def static_key(self) -> ReadOnlyCredentials | None:
        p = self.profile
        if p and p.access_key_id and p.secret_access_key and not self.role_arn:
            return ReadOnlyCredentials(p.access_key_id, p.secret_access_key, None)
        return None

    @property
    def session_cache(self) -> Path:
        return cache_file(self.endpoint, self.role_arn, self.aws_profile)


def locate(
    *, endpoint: str | None, profile_name: str | None, region: str | None, role_arn: str | None
) -> Where:
    """Endpoint, region and profile from flags, PAO_* variables and the config file."""
    config = load_config()
    profile_name = profile_name or os.environ.get("PAO_PROFILE")
    given = endpoint
    endpoint = endpoint or os.environ.get("PAO_ENDPOINT")
    endpoint_from = (
        "PAO_ENDPOINT" if given is None or given == os.environ.get("PAO_ENDPOINT") else "--endpoint"
    )
    profile: Profile | None = None
    used_name: str | None = None
    if profile_name:
        profile = config.profiles.get(profile_name)
        used_name = profile_name if profile else None
    elif config.default_profile:
        candidate = config.profiles.get(config.default_profile)
        # The default profile's key is only used against the default profile's own endpoint.
        if candidate and (
            endpoint is None or endpoint.rstrip("/") == candidate.endpoint.rstrip("/")
        ):
            profile = candidate
            used_name = config.default_profile
    if not endpoint and profile:
        endpoint, endpoint_from = profile.endpoint, f"profile {used_name} ({config_path()})"
    if not endpoint:
        raise CliError(
            codes.GATEWAY_UNREACHABLE.code,
            "no PAO endpoint configured",
            "Pass --endpoint, set PAO_ENDPOINT, or run `pao up` to write a local profile.",
            exit_code=2,
        )
    region = (
        region
        or os.environ.get("PAO_REGION")
        or (profile.region if profile else None)
        or "us-east-1"
    )
    aws_profile = (profile.aws_profile if profile else None) or (
        profile_name if profile_name and profile is None else None
    )
    return Where(
        endpoint.rstrip("/"),
        region,
        profile,
        role_arn or (profile.role_arn if profile else None),
        aws_profile,
        used_name,
        endpoint_from,
    )


def _aws_credentials(where: Where) -> ReadOnlyCredentials:
    """The caller's AWS credentials (the standard chain, or a named AWS profile), through the
    role when one is given."""
    return _aws_credentials_found(where)[0]


def _aws_credentials_found(where: Where) -> tuple[ReadOnlyCredentials, str]:
    """The caller's AWS credentials and where botocore found them (env, shared file, sso...)."""
    try:
        session = Session(profile=where.aws_profile)
        found = session.get_credentials()
    except BotoCoreError as exc:
        raise CliError(
            codes.NO_CREDENTIALS.code, str(exc), codes.NO_CREDENTIALS.suggestion, exit_code=2
        ) from exc
    if found is None:
        raise CliError(
            codes.NO_CREDENTIALS.code,
            "no base credentials to assume the role with"
            if where.role_arn
            else "no credentials found",
            codes.NO_CREDENTIALS.suggestion,
            exit_code=2,
        )
    method = _AWS_SOURCES.get(found.method or "", found.method or "the AWS credential chain")
    if where.aws_profile:
        method = f"AWS profile {where.aws_profile} ({method})"
    if where.role_arn:
        return _assume_role(session, where.role_arn, where.region), f"{method}, as {where.role_arn}"
    return found.get_frozen_credentials(), method


def _signs_in(where: Where) -> bool:
    if where.profile is not None and where.profile.sign_in:
        return True
    return os.environ.get("PAO_SIGN_IN", "").lower() in ("1", "true", "yes")


def resolve_target(
    *,
    endpoint: str | None,
    profile_name: str | None,
    region: str | None,
    role_arn: str | None,
    verbose: bool = False,
) -> Target:
    """Pick endpoint and credentials: flags, then PAO_* variables, then the profile, then AWS.

    A profile's static key signs as it is. Otherwise a session from `devctl login` that is
    still valid signs; a profile with `sign_in` (or PAO_SIGN_IN=1) signs in when there is none;
    else the AWS credentials sign themselves (PAO behind API Gateway).
    """
    where = locate(endpoint=endpoint, profile_name=profile_name, region=region, role_arn=role_arn)
    return target_at(where, find_credentials(where), verbose=verbose)


@dataclass(frozen=True)
class Found:
    """The credentials devctl signs with, and where they came from (never the secret)."""

    credentials: ReadOnlyCredentials
    source: str
    #: the AWS credentials still have to be exchanged for a session (`devctl login`)
    signs_in: bool = False

    @property
    def key_id(self) -> str:
        return self.credentials.access_key


def find_credentials(where: Where) -> Found:
    """The credentials `resolve_target` would sign with, without signing in yet."""
    static = where.static_key
    if static is not None:
        return Found(static, f"profile {where.profile_name} ({config_path()})")
    cached = load_session(where.session_cache)
    if cached is not None:
        until = cached.expires_at.isoformat(timespec="seconds")
        return Found(cached.credentials, f"session of `devctl login` until {until}")
    credentials, method = _aws_credentials_found(where)
    if _signs_in(where):
        return Found(credentials, f"{method}, to sign in with", signs_in=True)
    return Found(credentials, method)


def target_at(where: Where, found: Found, *, verbose: bool = False) -> Target:
    """The target that signs with `found`, signing in first when it has to."""
    if found.signs_in:
        session = login(where, verbose=verbose, base=found.credentials)
        return Target(where.endpoint, where.region, session.credentials)
    return Target(where.endpoint, where.region, found.credentials)


def login(
    where: Where, *, verbose: bool = False, base: ReadOnlyCredentials | None = None
) -> CachedSession:
    """Sign in with the caller's AWS credentials (`base`, else found now) and cache the session."""
    answer = sign_in(where.endpoint, base or _aws_credentials(where), verbose=verbose)
    session = cached_from_answer(where.endpoint, answer)
    save_session(where.session_cache, session)
    return session


def sign_in_at(
    *,
    endpoint: str | None,
    profile_name: str | None,
    region: str | None,
    role_arn: str | None,
    verbose: bool = False,
) -> tuple[CachedSession, Path]:
    """`devctl login`: a new session whatever is cached; the session and its cache file."""
    where = locate(endpoint=endpoint, profile_name=profile_name, region=region, role_arn=role_arn)
    return login(where, verbose=verbose), where.session_cache


def forget_session(
    *, endpoint: str | None, profile_name: str | None, region: str | None, role_arn: str | None
) -> Path | None:
    """`devctl logout`: delete the cached session; the file removed, if there was one."""
    where = locate(endpoint=endpoint, profile_name=profile_name, region=region, role_arn=role_arn)
    path = where.session_cache
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def sign(
    target: Target, method: str, url: str, body: bytes, headers: dict[str, str]
) -> dict[str, str]:
    """Headers for one call, signed with SigV4 over the exact URL and body sent."""
    if target.credentials is None:
        return headers
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    # Sign the payload hash too, so the gateway can tell a changed body from a wrong key.
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    c = target.credentials
    SigV4Auth(Credentials(c.access_key, c.secret_key, c.token), SERVICE, target.region).add_auth(
        request
    )
    return dict(request.headers.items())


@dataclass(frozen=True)
class Tagged:
    """An answer and the `ETag` it came with, to revalidate it by (`PaoClient.revalidate`)."""

    body: Any
    etag: str | None


class PaoClient:
    """Calls `/api/v1/*` and returns parsed JSON, or raises CliError with the server's envelope.

    With `verbose`, each call is one line on stderr (method, path, status, time, correlation id);
    with `debug`, also the names of the headers signed and the response body, shortened, with
    secret-looking fields masked. Header values are never shown.
    """

    def __init__(
        self,
        target: Target,
        *,
        verbose: bool = False,
        debug: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.target = target
        self.verbose = verbose or debug
        self.debug = debug
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        params: dict[str, Any] | None = None,
        ok_statuses: tuple[int, ...] = (),
        extra_headers: dict[str, str] | None = None,
    ) -> Any:
        """Send one signed call; a non-2xx answer (unless listed in ok_statuses) raises CliError.

        `body` is sent as JSON; `raw` as is, with `content_type`; `params` left None are not sent.
        """
        response = self.send(
            method,
            path,
            body=body,
            raw=raw,
            content_type=content_type,
            params=params,
            extra_headers=extra_headers,
        )
        return self.decode(response, ok_statuses)

    def revalidate(
        self, path: str, last: Tagged | None, *, params: dict[str, Any] | None = None
    ) -> Tagged:
        """GET `path`, sending `last`'s tag as `If-None-Match`: 304 Not Modified is a success
        that answers `last` again; anything else is decoded as `request` does."""
        headers = {"If-None-Match": last.etag} if last is not None and last.etag else None
        response = self.send("GET", path, params=params, extra_headers=headers)
        if response.status_code == 304 and last is not None:
            return last
        return Tagged(self.decode(response, ()), response.headers.get("ETag"))

    def send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        params: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one signed call and return the answer whatever its status; raises CliError only
        when the gateway cannot be reached."""
        url = self._url(path, params)
        payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = {
            "Accept": "application/json",
            "X-Correlation-ID": str(uuid.uuid4()),
            **(extra_headers or {}),
        }
        if body is not None or raw is not None:
            headers["Content-Type"] = content_type
        headers = sign(self.target, method, str(url), payload, headers)
        try:
            response = self._http.request(method, url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            self._trace_failure(method, url, exc, headers)
            raise CliError(
                codes.GATEWAY_UNREACHABLE.code,
                f"cannot reach {self.target.endpoint}: {type(exc).__name__}"
                + (f" ({exc})" if str(exc) else ""),
                codes.GATEWAY_UNREACHABLE.suggestion,
                correlation_id=headers["X-Correlation-ID"],
            ) from exc
        self._trace(response, headers)
        return response

    def _url(self, path: str, params: dict[str, Any] | None) -> httpx.URL:
        """The API address of `path`, with the query parameters that have a value."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return httpx.URL(f"{self.target.endpoint}/api/v1{path}", params=query or None)

    def stream_lines(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        """Lines of a streamed answer (server-sent events), signed like any call."""
        url = self._url(path, params)
        headers = sign(
            self.target,
            "GET",
            str(url),
            b"",
            {"Accept": "text/event-stream", "X-Correlation-ID": str(uuid.uuid4())},
        )
        try:
            with self._http.stream(
                "GET", url, headers=headers, timeout=httpx.Timeout(DEFAULT_TIMEOUT, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    self._trace(response, headers)
                    self.decode(response, ())
                self._trace(response, headers, streamed=True)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            self._trace_failure("GET", url, exc, headers)
            raise CliError(
                codes.GATEWAY_UNREACHABLE.code,
                f"lost the stream from {self.target.endpoint}: {type(exc).__name__}",
                codes.GATEWAY_UNREACHABLE.suggestion,
            ) from exc

    def _trace(
        self, response: httpx.Response, sent: dict[str, str], *, streamed: bool = False
    ) -> None:
        """One line per call on stderr; with --debug, the signed header names and the body."""
        if not self.verbose:
            return
        request = response.request
        ms = response.elapsed.total_seconds() * 1000 if not streamed else None
        timing = f" {ms:.0f} ms" if ms is not None else " (streaming)"
        correlation = response.headers.get("X-Correlation-ID", "-")
        _say(
            f"{request.method} {request.url.raw_path.decode()} -> {response.status_code}"
            f"{timing} correlation-id {correlation}"
        )
        if not self.debug:
            return
        _say(f"  signed headers: {_signed_names(sent)}")
        if not streamed:
            _say(f"  body: {_shown_body(response)}")

    def _trace_failure(
        self, method: str, url: httpx.URL, exc: Exception, sent: dict[str, str]
    ) -> None:
        if not self.verbose:
            return
        _say(
            f"{method} {url.raw_path.decode()} -> no answer ({type(exc).__name__}) "
            f"correlation-id {sent.get('X-Correlation-ID', '-')}"
        )
        if self.debug:
            _say(f"  signed headers: {_signed_names(sent)}")

    @staticmethod
    def decode(response: httpx.Response, ok_statuses: tuple[int, ...]) -> Any:
        """The JSON body of a success (or of a status in `ok_statuses`); any other answer is
        raised as a CliError with its code, message, suggestion and correlation id."""
        correlation_id = response.headers.get("X-Correlation-ID")
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.is_success or response.status_code in ok_statuses:
            if data is None and response.content:
                raise CliError(
                    codes.BAD_RESPONSE.code,
                    f"the gateway answered {response.status_code} with non-JSON",
                    codes.BAD_RESPONSE.suggestion,
                    correlation_id=correlation_id,
                )
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and "code" in error:
            raise CliError(
                str(error["code"]),
                str(error.get("message", "")),
                error.get("suggestion"),
                correlation_id=error.get("correlation_id") or correlation_id,
                status=response.status_code,
                details=list(error.get("details") or []),
            )
        raise CliError(
            codes.BAD_RESPONSE.code,
            f"HTTP {response.status_code} {response.reason_phrase}",
            codes.BAD_RESPONSE.suggestion,
            correlation_id=correlation_id,
            status=response.status_code,
        )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # noqa: T201 - the trace goes to stderr, as is


def _signed_names(headers: dict[str, str]) -> str:
    """The names of the headers the signature covers (from its SignedHeaders), never values."""
    authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    match = _SIGNED_HEADERS.search(authorization)
    if match is None:
        return "(unsigned)"
    return ", ".join(match.group(1).split(";"))


def _shown_body(response: httpx.Response) -> str:
    """The response body for --debug: secret-looking JSON fields masked, cut to a few KB."""
    if not response.content:
        return "(empty)"
    try:
        text = json.dumps(masked(response.json()), default=str)
    except ValueError:
        text = response.text
    if len(text) > DEBUG_BODY_CHARS:
        return f"{text[:DEBUG_BODY_CHARS]}... ({len(text) - DEBUG_BODY_CHARS} more characters)"
    return text


def masked(value: Any) -> Any:
    """`value` with every secret-looking field's value shown as `***`."""
    if isinstance(value, dict):
        return {
            k: "***" if _SECRET_KEY.search(str(k)) and v else masked(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value
