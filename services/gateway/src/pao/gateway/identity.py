"""`GET /api/v1/auth/whoami`: who the gateway thinks is calling (for checking a set-up)."""

from __future__ import annotations

from aiohttp import web

from pao.contracts.events import Requester
from pao.gateway.resources import IDENTITY
from pao.shared.keystore import Identity

routes = web.RouteTableDef()


def requester_of(identity: Identity) -> Requester:
    """The caller as a request records them, and as templates see them (`user`)."""
    return Requester(
        id=identity.user, name=identity.name, email=identity.email, teams=list(identity.teams)
    )


@routes.get("/api/v1/auth/whoami")
async def whoami(request: web.Request) -> web.Response:
    """The verified caller: user, teams, roles and the access key used."""
    identity: Identity = request[IDENTITY]
    return web.json_response(identity.model_dump(mode="json"))
