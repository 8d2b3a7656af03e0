"""Sign-in with AWS credentials: a signed `sts:GetCallerIdentity` call for a PAO session key.

`GET /api/v1/auth/sign-in` says what to sign for; `POST /api/v1/auth/sign-in` takes the signed
call (not yet sent), checks that it is exactly GetCallerIdentity, for this PAO (the signed
audience header), fresh and never seen before, sends it to the configured STS endpoint (and
nowhere else), maps the ARN STS answers with through the key store's `principals`, and answers
with a session key (`pao.gateway.sessions`). Both are public: the proof is the credential.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs
from xml.etree import ElementTree

import aiohttp
import structlog
from aiohttp import web

from pao.contracts import errors
from pao.contracts.auth import AUDIENCE_HEADER, NONCE_HEADER, SignInBody, SignInInfo, SignInSession
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway.bodies import read_model
from pao.gateway.resources import KEYS, SESSIONS, SETTINGS, STS_HTTP
from pao.shared.settings import Settings

log = structlog.get_logger("pao.gateway.signin")

routes = web.RouteTableDef()

PATH = "/api/v1/auth/sign-in"
#: The headers a proof may carry; PAO sends these (and Host) to STS, nothing else.
PROOF_HEADERS = frozenset(
    {
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "content-type",
        AUDIENCE_HEADER.lower(),
        NONCE_HEADER.lower(),
    }
)
_MUST_SIGN = ("host", "x-amz-date", AUDIENCE_HEADER.lower())
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>\d{8})/"
    r"(?P<region>[a-z0-9-]{1,32})/(?P<service>[a-z0-9-]{1,32})/aws4_request\s*,\s*"
    r"SignedHeaders=(?P<signed>[a-z0-9;-]{1,512})\s*,\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_BODY = {"Action": ["GetCallerIdentity"], "Version": ["2011-06-15"]}
_STS_TIMEOUT = aiohttp.ClientTimeout(total=10)
_MAX_ANSWER = 64 * 1024


def _malformed(message: str, field: str) -> PaoError:
    return PaoError(
        errors.AUTH_SIGNIN_MALFORMED,
        message,
        details=[ErrorDetail(field=field, message=message)],
    )


def audience_for(settings: Settings, request: web.Request) -> str:
    """What this gateway expects in a proof's audience header."""
    return settings.signin_audience or request.host


@dataclass(frozen=True, slots=True)
class Proof:
    """A sign-in proof that passed every check PAO can make without STS."""

    headers: dict[str, str]  # lower-cased names, as they go to STS
    body: str
    signature: str
    signed_at: datetime


def check_proof(
    body: SignInBody, *, audience: str, now: datetime, max_age: timedelta, max_skew: timedelta
) -> Proof:
    """The proof, if it is GetCallerIdentity, signed for STS and this PAO, and fresh."""
    headers: dict[str, str] = {}
    for name, value in body.headers.items():
        key = name.lower()
        if key in headers:
            raise _malformed(f"the header {name} is given twice", f"/headers/{name}")
        if key not in PROOF_HEADERS:
            raise _malformed(
                f"the header {name} is not part of a sign-in proof (allowed: "
                f"{', '.join(sorted(PROOF_HEADERS))}; Host is PAO's to set)",
                f"/headers/{name}",
            )
        headers[key] = value
    match = _AUTH_RE.match(headers.get("authorization", "").strip())
    if not match:
        raise _malformed(
            "the proof needs an AWS4-HMAC-SHA256 Authorization header", "/headers/Authorization"
        )
    if match["service"] != "sts":
        raise _malformed(
            f"the proof is signed for {match['service']}, not sts", "/headers/Authorization"
        )
    signed = match["signed"].split(";")
    unsigned = [name for name in _MUST_SIGN if name not in signed]
    if unsigned:
        raise _malformed(f"the proof must sign {', '.join(unsigned)}", "/headers/Authorization")
    missing = [name for name in signed if name != "host" and name not in headers]
    if missing:
        raise _malformed(f"signed header(s) not given: {', '.join(missing)}", "/headers")
    if headers[AUDIENCE_HEADER.lower()] != audience:
        raise _malformed(
            f"the proof is for {headers[AUDIENCE_HEADER.lower()]!r}; this PAO is {audience!r}",
            f"/headers/{AUDIENCE_HEADER}",
        )
    try:
        fields = parse_qs(body.body, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        fields = {}
    if fields != _BODY:
        raise _malformed("the proof's body must be exactly " + _body_text(), "/body")
    try:
        signed_at = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ", "/headers/X-Amz-Date") from None
    if match["date"] != headers["x-amz-date"][:8]:
        raise _malformed("the credential scope's date is not X-Amz-Date's", "/headers")
    age = now - signed_at
    if age > max_age or -age > max_skew:
        raise PaoError(
            errors.AUTH_SIGNIN_EXPIRED,
            f"the proof was signed {int(age.total_seconds())} s ago; it is accepted for "
            f"{int(max_age.total_seconds())} s (and up to {int(max_skew.total_seconds())} s "
            "ahead of PAO's clock)",
            details=[ErrorDetail(field="/headers/X-Amz-Date", message="outside the window")],
        )
    return Proof(headers, body.body, match["signature"], signed_at)


def _body_text() -> str:
    return "&".join(f"{k}={v[0]}" for k, v in _BODY.items())


async def caller_arn(http: aiohttp.ClientSession, endpoint: str, proof: Proof) -> str:
    """Send the proof to STS; the ARN it answers with, or the refusal as a PaoError."""
    try:
        async with http.post(
            endpoint + "/",
            data=proof.body.encode(),
            headers=proof.headers,
            timeout=_STS_TIMEOUT,
            allow_redirects=False,
        ) as answer:
            text = (await answer.content.read(_MAX_ANSWER)).decode("utf-8", "replace")
            status = answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("sts unreachable", endpoint=endpoint, error=type(exc).__name__)
        raise PaoError(
            errors.DEPENDENCY_UNAVAILABLE,
            "STS cannot be reached to check the sign-in; try again shortly",
            details=[ErrorDetail(field="sts", message=type(exc).__name__)],
            headers={"Retry-After": "5"},
        ) from exc
    values = _xml_values(text)
    if status == 200 and values.get("Arn"):
        return values["Arn"]
    if status >= 500 or (status == 200):
        log.warning("sts answered oddly", endpoint=endpoint, status=status)
        raise PaoError(
            errors.DEPENDENCY_UNAVAILABLE,
            f"STS answered {status} to the sign-in; try again shortly",
            details=[ErrorDetail(field="sts", message=f"HTTP {status}")],
            headers={"Retry-After": "5"},
        )
    code = values.get("Code", f"HTTP {status}")
    raise PaoError(
        errors.AUTH_SIGNIN_REFUSED,
        f"STS refused the proof: {code}",
        details=[ErrorDetail(field="/headers/Authorization", message=code)],
    )


def _xml_values(text: str) -> dict[str, str]:
    """Leaf elements of an STS answer by local name (Arn, Account, Code, Message, ...)."""
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 - the configured STS, capped answer
    except ElementTree.ParseError:
        return {}
    return {
        element.tag.rsplit("}", 1)[-1]: (element.text or "").strip()
        for element in root.iter()
        if len(element) == 0
    }


@routes.get(PATH)
async def sign_in_info(request: web.Request) -> web.Response:
    """What a sign-in proof must be signed for."""
    settings = request.app[SETTINGS]
    info = SignInInfo(
        sts_endpoint_url=settings.sts_endpoint,
        sts_region=settings.aws_region,
        audience=audience_for(settings, request),
        max_age_seconds=settings.signin_max_age_seconds,
        session_seconds=settings.session_ttl_seconds,
    )
    return web.json_response(info.model_dump(mode="json"))


@routes.post(PATH)
async def sign_in(request: web.Request) -> web.Response:
    """Exchange a signed GetCallerIdentity call for a PAO session key."""
    settings = request.app[SETTINGS]
    if settings.auth_mode != "sigv4":
        raise PaoError(
            errors.AUTH_SIGNIN_MALFORMED,
            f"sign-in is for PAO_AUTH_MODE=sigv4; this gateway runs {settings.auth_mode}",
            details=[ErrorDetail(field="auth_mode", message=settings.auth_mode)],
        )
    body = await read_model(request, SignInBody)
    now = datetime.now(UTC)
    max_age = timedelta(seconds=settings.signin_max_age_seconds)
    proof = check_proof(
        body,
        audience=audience_for(settings, request),
        now=now,
        max_age=max_age,
        max_skew=timedelta(seconds=settings.clock_skew_seconds),
    )
    sessions = request.app[SESSIONS]
    if not await sessions.first_use_of_proof(proof.signature, proof.signed_at + 2 * max_age):
        raise PaoError(
            errors.AUTH_SIGNIN_REPLAYED,
            "this sign-in proof was used before",
            details=[ErrorDetail(field="/headers/Authorization", message="seen before")],
        )
    arn = await caller_arn(request.app[STS_HTTP], settings.sts_endpoint, proof)
    identity = request.app[KEYS].principal(arn)
    if identity is None:
        log.warning("unmapped sign-in refused", principal=arn)
        raise PaoError(
            errors.AUTH_UNKNOWN_PRINCIPAL,
            f"the caller {arn} matches no principal configured for this PAO installation",
            details=[ErrorDetail(field="principal", message=arn)],
        )
    key_id, secret, expires_at = await sessions.mint(identity)
    log.info(
        "signed in",
        user=identity.user,
        principal=arn,
        session=identity.session,
        access_key_id=key_id,
        proof=hashlib.sha256(proof.signature.encode()).hexdigest()[:12],
        expires_at=expires_at.isoformat(),
    )
    session = SignInSession(
        access_key_id=key_id,
        secret_access_key=secret,
        expires_at=expires_at,
        user=identity.user,
        teams=list(identity.teams),
        roles=list(identity.roles),
        principal_arn=arn,
    )
    return web.json_response(
        session.model_dump(mode="json"), status=201, headers={"Cache-Control": "no-store"}
    )
