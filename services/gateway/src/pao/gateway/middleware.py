"""Gateway middlewares: correlation id, error envelope, SigV4 authentication, access log,
audit of commands."""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway import audit
from pao.gateway.portal.auth import COOKIE, CSRF_HEADER, SAFE_METHODS, PortalSession, check_csrf
from pao.gateway.portal.render import page
from pao.gateway.resources import (
    BROWSER_SESSION,
    CORRELATION_ID,
    IDENTITY,
    KEYS,
    PORTAL,
    SESSIONS,
    SETTINGS,
)
from pao.shared import sigv4
from pao.shared.keystore import Identity, KeyStore
from pao.shared.outages import database_away

log = structlog.get_logger("pao.gateway")

#: Probes load balancers call, and the API's description, without credentials.
PUBLIC_PATHS = frozenset(
    {
        "/api/v1/health",
        "/api/v1/health/ready",
        "/api/v1/version",
        "/api/v1/openapi.json",
        "/api/v1/auth/sign-in",  # the body is the credential (pao.gateway.signin)
    }
)
#: Paths that carry their own authentication (GitHub's HMAC signature).
SELF_AUTHENTICATED_PATHS = frozenset({"/api/v1/webhooks/github"})
#: The portal's pages find their browser's session themselves (`browser_session`), and send a
#: browser without one to the sign-in page rather than answering an API error.
PORTAL_PREFIX = "/portal/"

_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: What a caller hears while the database is away: nothing was done; try again shortly.
_DATABASE_AWAY = PaoError(
    errors.DEPENDENCY_UNAVAILABLE,
    "the database is unavailable for the moment; try again shortly (a submit with the same "
    "Idempotency-Key is answered once)",
    details=[ErrorDetail(field="database", message="unreachable")],
    headers={"Retry-After": "5"},
)


def error_response(error: PaoError, correlation_id: str | None) -> web.Response:
    """The error envelope as an HTTP response."""
    response = web.json_response(
        error.body(correlation_id).model_dump(mode="json", exclude_none=False),
        status=error.code.http_status,
        headers=error.headers,
    )
    return response


def portal_error(request: web.Request, error: PaoError, correlation_id: str) -> web.Response:
    """The error as a portal page, for a browser (no JSON, no trace)."""
    return page(
        request,
        "error.html",
        status=error.code.http_status,
        error=error,
        correlation_id=correlation_id,
        identity=None,
        headers=error.headers,
    )


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> PaoError:
    if isinstance(exc, web.HTTPNotFound):
        return PaoError(
            errors.ROUTE_NOT_FOUND,
            f"no endpoint at {request.path}",
            details=[ErrorDetail(field="path", message=request.path)],
        )
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return PaoError(
            errors.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.path}; allowed: {allowed}",
            details=[ErrorDetail(field="method", message=request.method)],
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        settings = request.app[SETTINGS]
        return PaoError(
            errors.BODY_TOO_LARGE,
            f"the body exceeds {settings.max_body_bytes} bytes",
            details=[ErrorDetail(field="body", message="too large")],
        )
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return PaoError(errors.UNSUPPORTED_MEDIA_TYPE, exc.text or None)
    code = errors.INTERNAL if exc.status >= 500 else errors.MALFORMED_BODY
    return PaoError(code, exc.reason)


@web.middleware
async def correlation_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request a correlation id, log it, and turn every failure into the envelope."""
    incoming = request.headers.get("X-Correlation-ID", "")
    correlation_id = incoming if _CORRELATION_RE.match(incoming) else str(uuid.uuid4())
    request[CORRELATION_ID] = correlation_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    started = time.perf_counter()
    refused: PaoError | None = None
    try:
        response = await handler(request)
    except PaoError as exc:
        refused = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        refused = _from_http_exception(exc, request)
    except Exception as exc:
        if database_away(exc):
            log.warning("database unavailable", path=request.path, error=str(exc))
            refused = _DATABASE_AWAY
        else:
            log.exception("unhandled error", method=request.method, path=request.path)
            refused = PaoError(errors.INTERNAL)
    if refused is not None:
        if request.path.startswith(PORTAL_PREFIX):
            response = portal_error(request, refused, correlation_id)
        else:
            response = error_response(refused, correlation_id)
    if not response.prepared:  # a stream sets it before its headers go out
        response.headers["X-Correlation-ID"] = correlation_id
    identity: Identity | None = request.get(IDENTITY)
    # Every call is in the access log; commands, accepted or refused, are in the audit too.
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
        user=identity.user if identity else None,
        session=identity.session if identity else None,
        principal=identity.principal_arn if identity else None,
        error_code=refused.code.code if refused else None,
    )
    if audit.audited(request):
        await audit.record(request, response, refused)
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the caller per the configured auth mode; probes stay public."""
    if (
        request.path in PUBLIC_PATHS
        or request.path in SELF_AUTHENTICATED_PATHS
        or request.path.startswith(PORTAL_PREFIX)
    ):
        return await handler(request)
    settings = request.app[SETTINGS]
    if settings.auth_mode == "none":
        request[IDENTITY] = Identity(user="anonymous", roles=("admin",))
    elif settings.auth_mode == "apigateway":
        request[IDENTITY] = _forwarded_identity(request)
        # A browser's call (it says where it comes from) carries the portal's CSRF token too,
        # as the proxy's own cookie would otherwise let another site's page act as the user.
        if request.method not in SAFE_METHODS and "Origin" in request.headers:
            check_csrf(request.headers.get(CSRF_HEADER), forwarded_csrf(request, request[IDENTITY]))
    elif COOKIE in request.cookies and "Authorization" not in request.headers:
        session = await _browser_session(request, request.cookies[COOKIE])
        # Known before the token is checked, so that the audit names whose session it was.
        request[BROWSER_SESSION] = session
        request[IDENTITY] = session.identity
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get(CSRF_HEADER), session.csrf)
    else:
        request[IDENTITY] = await _signed_identity(request)
    identity = request[IDENTITY]
    structlog.contextvars.bind_contextvars(user=identity.user)
    if identity.session is not None:
        structlog.contextvars.bind_contextvars(session=identity.session)
    return await handler(request)


async def caller_identity(request: web.Request) -> Identity:
    """The caller as the configured auth mode verifies it, for a public path that shows more to
    a known caller; PaoError when the request carries no valid credentials."""
    settings = request.app[SETTINGS]
    if settings.auth_mode == "none":
        return Identity(user="anonymous", roles=("admin",))
    if settings.auth_mode == "apigateway":
        return _forwarded_identity(request)
    return await _signed_identity(request)


def forwarded_csrf(request: web.Request, identity: Identity) -> str:
    """The CSRF token of a user the sign-in proxy forwards."""
    return request.app[PORTAL].csrf_for(f"forwarded-user\0{identity.user}")


async def _browser_session(request: web.Request, token: str) -> PortalSession:
    """The live portal session behind the cookie, or 401."""
    session = await request.app[PORTAL].session_of(token)
    if session is None:
        raise PaoError(
            errors.AUTH_PORTAL_SESSION_MISSING,
            "the portal session has ended or is unknown",
            details=[ErrorDetail(field="Cookie", message=f"{COOKIE}: no live session")],
        )
    return session


async def browser_identity(request: web.Request) -> tuple[Identity, str] | None:
    """The caller of a portal page and the CSRF token its forms carry; None when the browser
    has not signed in (the page then says how to)."""
    settings = request.app[SETTINGS]
    if settings.auth_mode == "none":
        identity = Identity(user="anonymous", roles=("admin",))
        return identity, request.app[PORTAL].csrf_for("anonymous")
    if settings.auth_mode == "apigateway":
        identity = _forwarded_identity(request)
        return identity, forwarded_csrf(request, identity)
    token = request.cookies.get(COOKIE)
    session = await request.app[PORTAL].session_of(token) if token else None
    if session is None:
        return None
    request[BROWSER_SESSION] = session
    return session.identity, session.csrf


async def _signed_identity(request: web.Request) -> Identity:
    """The caller whose SigV4 signature verifies; the header is checked before any body is read."""
    settings = request.app[SETTINGS]
    headers = {k.lower(): v for k, v in request.headers.items()}
    authorization = sigv4.check_authorization(
        headers, region=settings.region, max_skew=timedelta(seconds=settings.clock_skew_seconds)
    )
    sent = Counter(k.lower() for k, _ in request.headers.items())  # keys() would hide repeats
    body = await request.read()
    keys = request.app[KEYS]
    sessions = request.app[SESSIONS]
    key_id = authorization.access_key
    signed_in = keys.get(key_id) is None and sessions.is_session_key(key_id)
    identity = sigv4.verify(
        sigv4.SignedRequest(
            method=request.method,
            host=request.host,
            path_qs=request.raw_path,
            headers=headers,
            body=body,
            repeated=frozenset(name for name, times in sent.items() if times > 1),
        ),
        KeyStore([sessions.verifier_entry(key_id)]) if signed_in else keys,
        region=settings.region,
        authorization=authorization,
    )
    if not signed_in:
        return identity
    # The signature is right, so the key id is one this installation derived; the session
    # says who it was minted for (a well-signed id never minted is answered as a wrong key).
    session = await sessions.find(key_id)
    if session is None:
        raise PaoError(errors.AUTH_SIGNATURE_MISMATCH, "the signature does not match the request")
    if session.expires_at <= datetime.now(UTC):
        raise PaoError(
            errors.AUTH_SESSION_EXPIRED,
            f"the session {key_id} ended at {session.expires_at.isoformat()}",
            details=[ErrorDetail(field="Authorization", message="session expired")],
        )
    return session.identity


def _single_header(request: web.Request, name: str) -> str | None:
    """A header's value; sent twice it is refused, as a proxy and PAO could read different ones."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise PaoError(
            errors.AUTH_DUPLICATE_HEADER,
            f"the {name} header was sent {len(values)} times",
            details=[ErrorDetail(field=name, message="sent more than once")],
        )
    return values[0] if values else None


def _forwarded_identity(request: web.Request) -> Identity:
    """The identity AWS API Gateway verified and forwarded, if the forward is authentic."""
    settings = request.app[SETTINGS]
    secret = _single_header(request, settings.apigateway_secret_header) or ""
    if not settings.apigateway_secret or not hmac.compare_digest(
        secret, settings.apigateway_secret
    ):
        raise PaoError(
            errors.AUTH_UNTRUSTED_FORWARD,
            "the request did not come through the configured API Gateway",
        )
    arn = _single_header(request, settings.apigateway_identity_header)
    if not arn:
        raise PaoError(
            errors.AUTH_UNTRUSTED_FORWARD,
            "no caller identity was forwarded",
            details=[ErrorDetail(field=settings.apigateway_identity_header, message="missing")],
        )
    identity = request.app[KEYS].principal(arn)
    if identity is None:
        log.warning("unmapped caller refused", principal=arn)
        raise PaoError(
            errors.AUTH_UNKNOWN_PRINCIPAL,
            f"the caller {arn} matches no principal configured for this PAO installation",
            details=[ErrorDetail(field=settings.apigateway_identity_header, message=arn)],
        )
    return identity
