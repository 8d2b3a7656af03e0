"""How a browser signs in to the portal, and how its calls are told from a forged one.

Browsers cannot sign SigV4, so a signed caller (`devctl portal`) asks for a one-time link bound
to its identity. The link's token works once, within `portal_link_seconds`; redeeming it starts
a session whose token lives in a cookie (HttpOnly, SameSite=Strict, Secure over TLS). Only the
SHA-256 digests of link and session tokens are stored, so the tables sign nobody in.

Every state-changing call a session makes carries a CSRF token, in the `X-CSRF-Token` header
(the portal's scripts) or a `csrf_token` form field. The token is an HMAC of the session's token
under the installation's session key, so no other session, nor a page of another site, can know
it; comparing it needs no storage. Behind a sign-in proxy (`auth_mode=apigateway`) the identity
comes from the proxy's headers and the CSRF token is bound to the forwarded user instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from aiohttp import web

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway.sessions import SessionKeys
from pao.shared.keystore import Identity
from pao.shared.settings import Settings

log = structlog.get_logger("pao.gateway.portal")

#: The session cookie; `__Host-` would need Secure, which plain-HTTP dev stacks cannot set.
COOKIE = "pao_portal"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_BYTES = 32


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A signed-in browser: who, until when, and the token its forms carry."""

    identity: Identity
    expires_at: datetime
    csrf: str


class PortalAuth:
    """Mints sign-in links, redeems them for sessions and finds the session behind a cookie."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, keys: SessionKeys) -> None:
        self._settings = settings
        self._pool = pool
        self._keys = keys

    def csrf_for(self, basis: str) -> str:
        """The CSRF token of a session (its cookie's token) or of a forwarded user."""
        mac = hmac.new(self._keys.signing_key, b"pao-portal-csrf\0" + basis.encode(), "sha256")
        return mac.hexdigest()

    async def mint_link(self, identity: Identity) -> tuple[str, datetime]:
        """A new one-time token for `identity`, and when it stops working."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        expires_at = datetime.now(UTC) + timedelta(seconds=self._settings.portal_link_seconds)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM portal_links WHERE expires_at < now() - interval '1 day'"
            )
            await conn.execute(
                "INSERT INTO portal_links (digest, identity, expires_at) VALUES ($1, $2, $3)",
                _digest(token),
                identity.model_dump(mode="json"),
                expires_at,
            )
        return token, expires_at

    async def redeem(self, token: str) -> tuple[str, PortalSession]:
        """A session for the link's identity; the link is spent whatever happens next.

        Refused (and nothing made) when the token was never minted, was used before, or has
        expired: the three look alike to the caller, who needs a new link in each case."""
        now = datetime.now(UTC)
        lifetime = timedelta(seconds=self._settings.portal_session_seconds)
        session_token = secrets.token_urlsafe(_TOKEN_BYTES)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE portal_links SET used_at = $2 WHERE digest = $1 AND used_at IS NULL "
                "RETURNING identity, expires_at",
                _digest(token),
                now,
            )
            if row is None or row["expires_at"] <= now:
                raise PaoError(
                    errors.AUTH_PORTAL_LINK_INVALID,
                    "this sign-in link has expired or was already used",
                    details=[ErrorDetail(field="token", message="expired, used or unknown")],
                )
            identity = Identity.model_validate(row["identity"])
            await conn.execute(
                "DELETE FROM portal_sessions WHERE expires_at < now() - interval '1 day'"
            )
            await conn.execute(
                "INSERT INTO portal_sessions (digest, identity, expires_at) VALUES ($1, $2, $3)",
                _digest(session_token),
                identity.model_dump(mode="json"),
                now + lifetime,
            )
        log.info("portal sign-in", user=identity.user)
        return session_token, PortalSession(identity, now + lifetime, self.csrf_for(session_token))

    async def session_of(self, token: str) -> PortalSession | None:
        """The live session behind a cookie's token; None for an unknown or ended one."""
        row = await self._pool.fetchrow(
            "SELECT identity, expires_at FROM portal_sessions "
            "WHERE digest = $1 AND expires_at > now()",
            _digest(token),
        )
        if row is None:
            return None
        return PortalSession(
            Identity.model_validate(row["identity"]), row["expires_at"], self.csrf_for(token)
        )

    async def end(self, token: str) -> None:
        """Sign a session out: its cookie stops working at once, on every gateway."""
        await self._pool.execute("DELETE FROM portal_sessions WHERE digest = $1", _digest(token))


def set_session_cookie(
    request: web.Request, response: web.StreamResponse, token: str, *, settings: Settings
) -> None:
    """The session cookie: never readable by scripts, never sent by another site's page."""
    response.set_cookie(
        COOKIE,
        token,
        max_age=settings.portal_session_seconds,
        path="/",
        httponly=True,
        secure=served_over_tls(request, settings),
        samesite="Strict",
    )


def served_over_tls(request: web.Request, settings: Settings) -> bool:
    """Whether the browser reaches PAO over HTTPS: directly, or through the TLS proxy whose
    address is the public URL."""
    return request.secure or (settings.public_url or "").startswith("https://")


def check_csrf(sent: str | None, expected: str) -> None:
    """Refuse a state-changing call whose token is not the session's."""
    if not sent or not hmac.compare_digest(sent, expected):
        raise PaoError(
            errors.AUTH_CSRF_MISSING,
            "the call carries no CSRF token of this session"
            if not sent
            else "the call's CSRF token is not this session's",
            details=[ErrorDetail(field=CSRF_HEADER, message="missing" if not sent else "wrong")],
        )
