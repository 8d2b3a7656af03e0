"""Phase 1 routes: liveness, readiness, version and the OpenAPI document. Public: load balancers
probe them, and clients read the API's description before they can sign."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from pao.contracts import openapi
from pao.contracts.errors import PaoError
from pao.contracts.health import ComponentCheck, Health, Readiness, Version
from pao.gateway.middleware import caller_identity
from pao.gateway.resources import READINESS_CHECKS, ReadinessCheck

routes = web.RouteTableDef()

CHECK_TIMEOUT = 3.0
#: What an unsigned caller hears of a part.
PUBLIC_DETAIL = {True: "ok", False: "unavailable"}


def pao_version() -> str:
    """The installed PAO version."""
    try:
        return version("pao-gateway")
    except PackageNotFoundError:
        return "0.0.0+unknown"


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response(Health().model_dump())


@routes.get("/api/v1/health/ready")
async def ready(request: web.Request) -> web.Response:
    """Every dependency answers: 200, else 503 naming the parts that are down.

    The probe is public, so only a signed caller hears the details (error texts, addresses, the
    catalog's source); anyone else gets each part's name, verdict and latency.
    """
    checks = await asyncio.gather(*(run_check(c) for c in request.app[READINESS_CHECKS]))
    ok = all(c.ok for c in checks)
    if not await _is_signed(request):
        checks = [c.model_copy(update={"detail": PUBLIC_DETAIL[c.ok]}) for c in checks]
    body = Readiness(status="ready" if ok else "not_ready", checks=list(checks))
    return web.json_response(body.model_dump(), status=200 if ok else 503)


async def _is_signed(request: web.Request) -> bool:
    try:
        await caller_identity(request)
    except PaoError:
        return False
    return True


@routes.get("/api/v1/version")
async def version_info(request: web.Request) -> web.Response:
    """The server's version."""
    body = Version(
        version=pao_version(),
        python=platform.python_version(),
        git_sha=os.environ.get("PAO_GIT_SHA"),
    )
    return web.json_response(body.model_dump())


@functools.cache
def _openapi_text() -> str:
    return openapi.render()


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (docs/openapi.json)."""
    return web.Response(text=_openapi_text(), content_type="application/json")


async def run_check(check: ReadinessCheck) -> ComponentCheck:
    """Run one probe with a deadline; any failure becomes `ok: false` with the reason."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            detail = await check.probe()
    except TimeoutError:
        return ComponentCheck(
            name=check.name,
            ok=False,
            detail=f"no answer within {CHECK_TIMEOUT:.0f} s",
            latency_ms=elapsed(),
        )
    except Exception as exc:  # noqa: BLE001 - readiness reports failures, it does not raise
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ComponentCheck(name=check.name, ok=False, detail=reason, latency_ms=elapsed())
    return ComponentCheck(name=check.name, ok=True, detail=detail, latency_ms=elapsed())
