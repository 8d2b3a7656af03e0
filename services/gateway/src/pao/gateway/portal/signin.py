"""Signing a browser in and out: `POST /api/v1/portal/links` (signed, from `devctl portal`),
`GET /portal/login?token=` (the link itself) and `POST /portal/logout`."""

from __future__ import annotations

from aiohttp import web

from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway.portal.auth import COOKIE, CSRF_FIELD, check_csrf, set_session_cookie
from pao.gateway.portal.render import page
from pao.gateway.resources import BROWSER_SESSION, IDENTITY, PORTAL, SETTINGS

routes = web.RouteTableDef()


def _base_url(request: web.Request) -> str:
    """Where the browser reaches this gateway: the public URL, else the address devctl used."""
    public = request.app[SETTINGS].public_url
    return (public or str(request.url.origin())).rstrip("/")


@routes.post("/api/v1/portal/links")
async def make_link(request: web.Request) -> web.Response:
    """A one-time sign-in link for the (signed) caller, valid for `portal_link_seconds`."""
    if BROWSER_SESSION in request:
        raise PaoError(
            errors.AUTH_PORTAL_LINK_SESSION,
            "a portal session cannot make sign-in links: each one starts from a signed call",
            details=[ErrorDetail(field="Authorization", message="missing (portal cookie sent)")],
        )
    if await request.read():
        raise PaoError(
            errors.MALFORMED_BODY,
            "POST /portal/links takes no body: the link is for the signed caller",
            details=[ErrorDetail(field="body", message="not empty")],
        )
    identity = request[IDENTITY]
    token, expires_at = await request.app[PORTAL].mint_link(identity)
    return web.json_response(
        {
            "url": f"{_base_url(request)}/portal/login?token={token}",
            "expires_at": expires_at.isoformat(),
            "user": identity.user,
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/portal/login")
async def login(request: web.Request) -> web.StreamResponse:
    """Redeem a link: start a session and go on to the portal.

    The answer is a page that moves on by itself, not a redirect: a SameSite=Strict cookie set
    while following a link from another site (a chat, a mail) is withheld from the redirect that
    follows, but sent with a navigation the portal's own page starts."""
    token = request.query.get("token", "")
    settings = request.app[SETTINGS]
    try:
        if not token:
            raise PaoError(
                errors.AUTH_PORTAL_LINK_INVALID,
                "the sign-in link has no token",
                details=[ErrorDetail(field="token", message="missing")],
            )
        session_token, session = await request.app[PORTAL].redeem(token)
    except PaoError as exc:
        return page(request, "error.html", status=exc.code.http_status, error=exc, identity=None)
    response = page(
        request,
        "signed_in.html",
        identity=session.identity,
        csrf=session.csrf,
        next_url="/portal/",
        headers={"Refresh": "0; url=/portal/"},
    )
    set_session_cookie(request, response, session_token, settings=settings)
    return response


@routes.post("/portal/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """End the browser's session (a form carrying the CSRF token)."""
    token = request.cookies.get(COOKIE)
    session = await request.app[PORTAL].session_of(token) if token else None
    if session is not None:
        form = await request.post()
        sent = form.get(CSRF_FIELD)
        check_csrf(sent if isinstance(sent, str) else None, session.csrf)
        await request.app[PORTAL].end(token or "")
    response = page(request, "signed_out.html", identity=None)
    response.del_cookie(COOKIE, path="/")
    return response
