"""The gateway over real HTTP: probes, SigV4, the error envelope, correlation ids."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from conftest import signed_client
from pao.catalog.bootstrap import CatalogParts
from pao.devctl.errors import CliError
from pao.gateway.app import create_app
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_probes_answer_without_credentials(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/api/v1/health") as r:
        assert r.status == 200
        assert (await r.json())["status"] == "ok"
    async with http.get(f"{gateway}/api/v1/version") as r:
        assert r.status == 200
        assert (await r.json())["api_version"] == "v1"
    async with http.get(f"{gateway}/api/v1/health/ready") as r:
        body = await r.json()
        assert r.status == 200, body
        assert body["status"] == "ready"
        assert {c["name"]: c["ok"] for c in body["checks"]} == {
            "database": True,
            "broker": True,
            "catalog": True,
        }


async def test_readiness_names_the_part_that_is_down(
    settings: Settings,
    keys: KeyStore,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    catalog_parts: CatalogParts,
) -> None:
    dead_broker = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    runner, url = await serve(
        create_app(dead_broker, keys=keys, pool=pool, catalog_parts=catalog_parts)
    )
    try:
        async with http.get(f"{url}/api/v1/health/ready") as r:
            body = await r.json()
        assert r.status == 503
        assert body["status"] == "not_ready"
        checks = {c["name"]: c for c in body["checks"]}
        assert checks["database"]["ok"] is True
        assert checks["broker"]["ok"] is False
        assert checks["broker"]["detail"]
    finally:
        await runner.cleanup()


async def test_a_signed_call_is_identified(gateway: str) -> None:
    client = signed_client(gateway)
    try:
        me = await asyncio.to_thread(client.request, "GET", "/auth/whoami")
    finally:
        client.close()
    assert me["user"] == "dana"
    assert me["teams"] == ["payments"]


async def test_an_unsigned_call_gets_the_error_envelope(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/api/v1/auth/whoami") as r:
        body = await r.json()
        assert r.status == 401
        assert body["error"]["code"] == "PAO-AUTH-001"
        assert body["error"]["suggestion"]
        assert body["error"]["correlation_id"] == r.headers["X-Correlation-ID"]


async def test_a_wrong_secret_is_refused_with_its_own_code(gateway: str) -> None:
    client = signed_client(gateway, secret="wrong")
    try:
        with pytest.raises(CliError) as caught:
            await asyncio.to_thread(client.request, "GET", "/auth/whoami")
    finally:
        client.close()
    assert caught.value.code == "PAO-AUTH-005"
    assert caught.value.status == 403


async def test_an_unknown_path_gets_a_404_envelope(gateway: str) -> None:
    client = signed_client(gateway)
    try:
        with pytest.raises(CliError) as caught:
            await asyncio.to_thread(client.request, "GET", "/no/such/thing")
    finally:
        client.close()
    assert caught.value.status == 404
    assert caught.value.code == "PAO-API-001"
    assert caught.value.details[0]["field"] == "path"


async def test_a_wrong_method_gets_a_405_envelope_with_allow(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{gateway}/api/v1/health", json={}) as r:
        body = await r.json()
        assert r.status == 405
        assert body["error"]["code"] == "PAO-API-002"
        assert "GET" in r.headers["Allow"]


async def test_an_oversized_body_gets_a_413_envelope(
    gateway: str, http: aiohttp.ClientSession, settings: Settings
) -> None:
    big = b"x" * (settings.max_body_bytes + 1)
    async with http.post(
        f"{gateway}/api/v1/auth/whoami", data=big, headers={"Content-Type": "application/json"}
    ) as r:
        body = await r.json()
        assert r.status == 413
        assert body["error"]["code"] == "PAO-API-003"


async def test_an_unexpected_failure_is_a_500_envelope_without_internals(
    settings: Settings,
    keys: KeyStore,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    catalog_parts: CatalogParts,
) -> None:
    app = create_app(
        settings.model_copy(update={"auth_mode": "none"}),
        keys=keys,
        pool=pool,
        catalog_parts=catalog_parts,
    )

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/api/v1/broken", broken)
    runner, url = await serve(app)
    try:
        async with http.get(f"{url}/api/v1/broken", headers={"X-Correlation-ID": "trace-42"}) as r:
            text = await r.text()
            assert r.status == 500
            assert r.headers["X-Correlation-ID"] == "trace-42"
    finally:
        await runner.cleanup()
    assert "PAO-SYS-001" in text
    assert "trace-42" in text
    assert "secret internal detail" not in text
    assert "Traceback" not in text


async def test_a_correlation_id_is_echoed_or_generated(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway}/api/v1/health", headers={"X-Correlation-ID": "abc-123"}) as r:
        assert r.headers["X-Correlation-ID"] == "abc-123"
    async with http.get(f"{gateway}/api/v1/health", headers={"X-Correlation-ID": "bad id\t!"}) as r:
        uuid.UUID(r.headers["X-Correlation-ID"])


async def test_behind_api_gateway_the_forwarded_identity_is_trusted_only_with_the_secret(
    settings: Settings,
    keys: KeyStore,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    catalog_parts: CatalogParts,
) -> None:
    forwarded = settings.model_copy(
        update={"auth_mode": "apigateway", "apigateway_secret": "shared-with-apigw"}
    )
    runner, url = await serve(
        create_app(forwarded, keys=keys, pool=pool, catalog_parts=catalog_parts)
    )
    arn = "arn:aws:sts::123456789012:assumed-role/developers/erin"
    try:
        async with http.get(
            f"{url}/api/v1/auth/whoami",
            headers={
                "x-pao-caller-arn": arn,
                "x-pao-apigateway-secret": "shared-with-apigw",
            },
        ) as r:
            assert r.status == 200
            assert (await r.json())["user"] == "erin"
        async with http.get(f"{url}/api/v1/auth/whoami", headers={"x-pao-caller-arn": arn}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "PAO-AUTH-009"
    finally:
        await runner.cleanup()
