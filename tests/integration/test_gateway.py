"""The gateway over real HTTP: probes, SigV4, the error envelope, correlation ids."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict
from structlog.testing import capture_logs

from conftest import BIN, TEST_KEY_ID, TEST_SECRET, signed_client
from pao.catalog.bootstrap import CatalogParts
from pao.devctl.errors import CliError
from pao.gateway.app import create_app
from pao.gateway.bootstrap import UnsafeAuthModeError, check_auth_mode, start
from pao.shared.eventstore import EventStore
from pao.shared.keystore import KeyEntry, KeyStore, PrincipalEntry
from pao.shared.runtime import Scope
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


def signed_headers(
    method: str,
    url: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    signed_at: datetime | None = None,
) -> dict[str, str]:
    """SigV4 headers over `headers` (all signed), as signed at `signed_at` (default: now)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    stamp = (signed_at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = stamp
    request.headers["Host"] = urlsplit(url).netloc
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(TEST_KEY_ID, TEST_SECRET), "execute-api", "us-east-1")
    signature = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )
    signed = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return {k: v for k, v in request.headers.items() if k != "Host"}


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


async def test_readiness_tells_its_reasons_to_signed_callers_only(
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
    ready = f"{url}/api/v1/health/ready"
    try:
        async with http.get(ready) as r:
            public = await r.json()
        async with http.get(ready, headers=signed_headers("GET", ready)) as r:
            signed = await r.json()
    finally:
        await runner.cleanup()

    assert {c["name"]: c["detail"] for c in public["checks"]} == {
        "database": "ok",
        "broker": "unavailable",
        "catalog": "ok",
    }
    details = {c["name"]: c["detail"] for c in signed["checks"]}
    assert "Unable to bootstrap" in details["broker"]
    assert details["database"] == "SELECT 1 answered"
    assert details["catalog"] != "ok"


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "body"),
        (
            b'{"item_id": "postgresql-standard", "inputs": {"a": '
            + b"[" * 100
            + b"]" * 100
            + b"}}",
            "/inputs/a" + "/0" * 62,
        ),
        (b'{"item_id": "a", "item_id": "b"}', "body"),
        (b'{"item_id": "postgresql-standard", "inputs": {"n": 1e999}}', "body"),
        (b'{"item_id": "postgresql-standard", "inputs": {"n": NaN}}', "body"),
        (b'{"item_id": "postgresql-standard", "inputs": {"db": "a\\u0000"}}', "/inputs/db"),
        (b'{"item_id": "postgresql-standard", "inputs": {"db": "\\ud800"}}', "/inputs/db"),
    ],
    ids=["10000-deep", "100-deep-field", "repeated-key", "1e999", "NaN", "NUL", "lone-surrogate"],
)
async def test_a_body_that_is_not_strict_json_is_a_400_naming_the_value(
    gateway: str, http: aiohttp.ClientSession, body: bytes, field: str
) -> None:
    url = f"{gateway}/api/v1/validate/request"
    headers = signed_headers("POST", url, body, {"Content-Type": "application/json"})
    async with http.post(url, data=body, headers=headers) as r:
        answer = await r.json()
        assert r.status == 400, answer
        assert answer["error"]["code"] == "PAO-API-004"
        assert answer["error"]["details"][0]["field"] == field


@pytest.mark.parametrize("path", ["/requests?item_id=a%00b", "/resources?team=%00"])
async def test_a_nul_in_a_query_filter_is_a_422_naming_it(
    gateway: str, http: aiohttp.ClientSession, path: str
) -> None:
    url = f"{gateway}/api/v1{path}"
    async with http.get(url, headers=signed_headers("GET", url)) as r:
        answer = await r.json()
        assert r.status == 422, answer
        assert answer["error"]["code"] == "PAO-API-008"
        assert answer["error"]["details"][0]["field"] in ("item_id", "team")


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/requests/a%00b", "PAO-REQ-001"),
        ("GET", "/requests/a%00b/logs?follow=true", "PAO-REQ-001"),
        ("POST", "/requests/a%00b/retry", "PAO-REQ-001"),
        ("POST", "/requests/a%00b/abort", "PAO-REQ-001"),
        ("GET", "/resources/a%00b", "PAO-RES-001"),
    ],
)
async def test_an_id_holding_a_nul_names_nothing(
    gateway: str, http: aiohttp.ClientSession, method: str, path: str, code: str
) -> None:
    url = f"{gateway}/api/v1{path}"
    async with http.request(method, url, headers=signed_headers(method, url)) as r:
        answer = await r.json()
        assert r.status == 404, answer
        assert answer["error"]["code"] == code


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00%2B01:00", "2026-13-01T00:00:00Z"]
)
async def test_a_time_filter_out_of_range_is_a_422_naming_it(
    gateway: str, http: aiohttp.ClientSession, when: str
) -> None:
    url = f"{gateway}/api/v1/requests?created_after={when}"
    async with http.get(url, headers=signed_headers("GET", url)) as r:
        answer = await r.json()
        assert r.status == 422, answer
        assert answer["error"]["code"] == "PAO-API-008"
        assert answer["error"]["details"][0]["field"] == "created_after"


async def test_an_oversized_body_gets_a_413_envelope(
    gateway: str, http: aiohttp.ClientSession, settings: Settings
) -> None:
    big = b"x" * (settings.max_body_bytes + 1)
    url = f"{gateway}/api/v1/auth/whoami"
    headers = signed_headers("POST", url, big, {"Content-Type": "application/json"})
    async with http.post(url, data=big, headers=headers) as r:
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


FORWARD_SECRET = "shared-with-apigw"
ACCOUNT = "123456789012"


@pytest_asyncio.fixture(loop_scope="session")
async def behind_api_gateway(
    settings: Settings, pool: asyncpg.Pool, catalog_parts: CatalogParts
) -> AsyncIterator[str]:
    """A gateway in `apigateway` mode mapping one role and one IAM user; yields its base URL."""
    mapped = KeyStore(
        [
            KeyEntry(
                access_key_id="PAOCIKEY000000000001",
                secret_access_key="ci-secret",
                user="ci-bot",
                principal_arn=f"arn:aws:iam::{ACCOUNT}:user/ci/jenkins",
            )
        ],
        [PrincipalEntry(account=ACCOUNT, role="developers", user="developers", teams=("web",))],
    )
    forwarded = settings.model_copy(
        update={"auth_mode": "apigateway", "apigateway_secret": FORWARD_SECRET}
    )
    runner, url = await serve(
        create_app(forwarded, keys=mapped, pool=pool, catalog_parts=catalog_parts)
    )
    yield url
    await runner.cleanup()


async def whoami_as(
    http: aiohttp.ClientSession, url: str, headers: list[tuple[str, str]]
) -> tuple[int, dict]:
    async with http.get(f"{url}/api/v1/auth/whoami", headers=CIMultiDict(headers)) as r:
        return r.status, await r.json()


def forwarded_as(arn: str) -> list[tuple[str, str]]:
    return [("x-pao-caller-arn", arn), ("x-pao-apigateway-secret", FORWARD_SECRET)]


async def test_behind_api_gateway_the_forwarded_identity_is_trusted_only_with_the_secret(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/developers/erin"
    status, body = await whoami_as(http, behind_api_gateway, forwarded_as(arn))
    assert status == 200
    assert body["user"] == "developers"
    assert body["teams"] == ["web"]
    status, body = await whoami_as(http, behind_api_gateway, [("x-pao-caller-arn", arn)])
    assert status == 401
    assert body["error"]["code"] == "PAO-AUTH-009"


async def test_behind_api_gateway_a_session_name_never_becomes_the_user(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    # Anyone allowed to assume `developers` picks the session name; naming it after an admin
    # gives them nothing more.
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/developers/root-admin"
    with capture_logs() as logs:
        status, body = await whoami_as(http, behind_api_gateway, forwarded_as(arn))
    assert status == 200
    assert body["user"] == "developers"
    assert body["roles"] == []
    assert body["session"] == "root-admin"
    lines = [line for line in logs if line["event"] == "request"]
    assert lines[-1]["user"] == "developers"
    assert lines[-1]["session"] == "root-admin"


async def test_behind_api_gateway_an_unmapped_caller_is_refused(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    for arn in (
        f"arn:aws:sts::{ACCOUNT}:assumed-role/admins/root-admin",  # role not mapped
        "arn:aws:sts::999999999999:assumed-role/developers/erin",  # another account
        f"arn:aws:iam::{ACCOUNT}:user/root-admin",  # a user without an explicit entry
        f"arn:aws:iam::{ACCOUNT}:user/jenkins",  # not the mapped user's path
        "root-admin",
    ):
        status, body = await whoami_as(http, behind_api_gateway, forwarded_as(arn))
        assert status == 403, arn
        assert body["error"]["code"] == "PAO-AUTH-011"
        assert body["error"]["details"][0]["field"] == "x-pao-caller-arn"
        assert body["error"]["suggestion"]


async def test_behind_api_gateway_an_iam_user_matches_its_explicit_entry(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:user/ci/jenkins"
    status, body = await whoami_as(http, behind_api_gateway, forwarded_as(arn))
    assert status == 200
    assert body["user"] == "ci-bot"
    assert body["session"] is None


async def test_behind_api_gateway_a_repeated_identity_or_secret_header_is_refused(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    mapped = f"arn:aws:sts::{ACCOUNT}:assumed-role/developers/erin"
    other = f"arn:aws:iam::{ACCOUNT}:user/ci/jenkins"
    for headers in (
        [*forwarded_as(mapped), ("x-pao-caller-arn", other)],
        [*forwarded_as(mapped), ("x-pao-apigateway-secret", FORWARD_SECRET)],
    ):
        status, body = await whoami_as(http, behind_api_gateway, headers)
        assert status == 400
        assert body["error"]["code"] == "PAO-AUTH-012"
        assert body["error"]["details"][0]["field"] in {
            "x-pao-caller-arn",
            "x-pao-apigateway-secret",
        }


async def test_the_configured_clock_skew_bounds_the_signing_date(
    settings: Settings,
    keys: KeyStore,
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    catalog_parts: CatalogParts,
) -> None:
    strict = settings.model_copy(update={"clock_skew_seconds": 60})
    runner, url = await serve(create_app(strict, keys=keys, pool=pool, catalog_parts=catalog_parts))
    whoami = f"{url}/api/v1/auth/whoami"
    try:
        async with http.get(whoami, headers=signed_headers("GET", whoami)) as r:
            assert r.status == 200
        two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
        old = signed_headers("GET", whoami, signed_at=two_minutes_ago)
        async with http.get(whoami, headers=old) as r:
            body = await r.json()
        assert r.status == 401
        assert body["error"]["code"] == "PAO-AUTH-003"
        assert "limit 60 s" in body["error"]["message"]
    finally:
        await runner.cleanup()


async def test_a_signed_header_sent_twice_is_refused(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    # The signature holds for one copy; a handler reading the other must never see it.
    url = f"{gateway}/api/v1/auth/whoami"
    headers = CIMultiDict(signed_headers("GET", url, headers={"Idempotency-Key": "first"}))
    headers.add("Idempotency-Key", "first")
    async with http.get(url, headers=headers) as r:
        body = await r.json()
    assert r.status == 400
    assert body["error"]["code"] == "PAO-AUTH-012"
    assert body["error"]["details"][0]["field"] == "idempotency-key"


async def test_an_unsigned_idempotency_key_is_refused(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway}/api/v1/auth/whoami"
    headers = signed_headers("GET", url) | {"Idempotency-Key": "added-by-a-relay"}
    async with http.get(url, headers=headers) as r:
        body = await r.json()
    assert r.status == 401
    assert body["error"]["code"] == "PAO-AUTH-013"


async def test_an_unknown_access_key_is_answered_as_a_wrong_signature(gateway: str) -> None:
    answers = []
    for key_id, secret in (("PAONOBODY00000000000", "whatever"), (TEST_KEY_ID, "wrong")):
        client = signed_client(gateway, key_id=key_id, secret=secret)
        try:
            with pytest.raises(CliError) as caught:
                await asyncio.to_thread(client.request, "GET", "/auth/whoami")
        finally:
            client.close()
        answers.append((caught.value.status, caught.value.code, caught.value.message))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (403, "PAO-AUTH-005")


async def test_an_unsigned_body_is_refused_before_it_is_read(
    gateway: str, http: aiohttp.ClientSession, settings: Settings
) -> None:
    big = b"x" * (settings.max_body_bytes + 1)
    async with http.post(
        f"{gateway}/api/v1/auth/whoami", data=big, headers={"Content-Type": "application/json"}
    ) as r:
        body = await r.json()
    assert r.status == 401
    assert body["error"]["code"] == "PAO-AUTH-001"


async def test_without_authentication_the_gateway_refuses_to_bind_beyond_loopback(
    settings: Settings, keys: KeyStore, pool: asyncpg.Pool, store: EventStore
) -> None:
    for host in ("0.0.0.0", "::", "10.0.0.5", "gateway.internal"):  # noqa: S104
        open_to_all = settings.model_copy(update={"auth_mode": "none", "http_host": host})
        scope = Scope(open_to_all, pool, store, asyncio.Event())
        with pytest.raises(UnsafeAuthModeError, match="PAO_AUTH_MODE=none"):
            await start(scope, keys)
        assert scope.cleanups == []


async def test_pao_serve_and_pao_up_say_so_in_one_line_instead_of_starting_open(tmp_path) -> None:
    env = {
        **os.environ,
        "PAO_AUTH_MODE": "none",
        "PAO_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "PAO_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    for command in (
        ["serve", "gateway", "--host", "0.0.0.0"],  # noqa: S104
        ["up", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "state")],  # noqa: S104
    ):
        done = await asyncio.to_thread(
            subprocess.run,
            [str(BIN / "pao"), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert "PAO_AUTH_MODE=none makes every caller an admin" in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "state" / "stack.json").exists()


async def test_without_authentication_on_loopback_the_gateway_warns(settings: Settings) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        local = settings.model_copy(update={"auth_mode": "none", "http_host": host})
        with capture_logs() as logs:
            check_auth_mode(local)
        assert [line["log_level"] for line in logs] == ["warning"]
        assert "every caller is an admin" in logs[0]["event"]
    with capture_logs() as logs:
        signed_only = {"auth_mode": "sigv4", "http_host": "0.0.0.0"}  # noqa: S104
        check_auth_mode(settings.model_copy(update=signed_only))
    assert logs == []


async def test_behind_a_sign_in_proxy_the_portal_takes_the_forwarded_identity(
    behind_api_gateway: str, http: aiohttp.ClientSession
) -> None:
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/developers/erin"
    pages = f"{behind_api_gateway}/portal/requests"
    async with http.get(pages, headers=CIMultiDict(forwarded_as(arn))) as r:
        assert r.status == 200
        page = await r.text()
    assert '<span class="who" title="developers">developers</span>' in page
    token = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', page)
    assert token
    # Without the proxy's secret the portal is refused, as the API is (an HTML page, no trace).
    async with http.get(pages, headers=CIMultiDict([("x-pao-caller-arn", arn)])) as r:
        assert r.status == 401
        assert r.content_type == "text/html"
        assert "PAO-AUTH-009" in await r.text()
    # A browser's state change (it says where it comes from) needs the page's CSRF token; a
    # non-browser caller through the proxy does not. The item is unknown: nothing is made.
    submit = f"{behind_api_gateway}/api/v1/requests"
    body = {"item_id": "no-such-item", "inputs": {}}
    browser = [*forwarded_as(arn), ("Origin", behind_api_gateway)]
    async with http.post(submit, json=body, headers=CIMultiDict(browser)) as r:
        assert r.status == 403
        assert (await r.json())["error"]["code"] == "PAO-AUTH-021"
    with_token = CIMultiDict([*browser, ("X-CSRF-Token", token.group(1))])
    async with http.post(submit, json=body, headers=with_token) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (404, "PAO-CAT-001")
    async with http.post(submit, json=body, headers=CIMultiDict(forwarded_as(arn))) as r:
        assert r.status == 404
