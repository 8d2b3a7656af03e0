"""`POST /api/v1/webhooks/github`: a push to the catalog's branch refreshes the catalog."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from pao.catalog.sources import GitSource
from pao.contracts import errors
from pao.contracts.errors import ErrorDetail, PaoError
from pao.gateway.bodies import parse_json
from pao.gateway.catalog import run_refresh
from pao.gateway.resources import CATALOG, SECRETS, SETTINGS
from pao.shared.secrets import SecretNotFound

routes = web.RouteTableDef()


def verify_github_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check `X-Hub-Signature-256: sha256=<hex>` in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not header or not hmac.compare_digest(header, expected):
        raise PaoError(
            errors.WEBHOOK_SIGNATURE_INVALID,
            "X-Hub-Signature-256 is missing or does not match the body",
            details=[ErrorDetail(field="X-Hub-Signature-256", message="missing or wrong")],
        )


@routes.post("/api/v1/webhooks/github")
async def github(request: web.Request) -> web.Response:
    """ping -> 200; push to the catalog branch -> refresh; anything else -> 202 ignored."""
    settings = request.app[SETTINGS]
    secret = settings.github_webhook_secret
    if not secret and settings.github_webhook_secret_path:
        # Read per call through the provider's cache, so a rotated secret applies within it.
        try:
            secret = await request.app[SECRETS].get(settings.github_webhook_secret_path)
        except SecretNotFound:
            secret = None
    if not secret:
        raise PaoError(errors.WEBHOOK_NOT_CONFIGURED)
    body = await request.read()
    verify_github_signature(secret, body, request.headers.get("X-Hub-Signature-256"))
    event = request.headers.get("X-GitHub-Event", "")
    if event == "ping":
        return web.json_response({"ok": True, "event": "ping"})
    if event != "push":
        return web.json_response({"ignored": f"event {event or '(none)'}"}, status=202)
    try:
        payload = parse_json(body or b"{}")
    except ValueError as exc:
        raise PaoError(errors.MALFORMED_BODY, f"the push payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise PaoError(errors.MALFORMED_BODY, "the push payload is not a JSON object")
    source = request.app[CATALOG].source
    branch = source.ref if isinstance(source, GitSource) else settings.catalog_git_ref
    if payload.get("ref") != f"refs/heads/{branch}":
        return web.json_response(
            {"ignored": f"push to {payload.get('ref')}, not {branch}"}, status=202
        )
    pusher = payload.get("pusher")
    pusher = (pusher.get("name") if isinstance(pusher, dict) else None) or "github"
    result = await run_refresh(request, actor=f"github:{pusher}")
    return web.json_response(result.model_dump(mode="json"))
