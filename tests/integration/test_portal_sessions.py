"""The portal's sign-in, session cookie, CSRF tokens and authorisation, against a running
gateway: a link signs in once and only within its life; a session sees what its user may see
through the API's own handlers; nothing changes without the session's CSRF token."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from conftest import ADMIN, DANA
from pao.shared.keystore import KeyEntry, KeyStore
from pao.shared.settings import Settings
from support.stack import Stack, fresh_stack, signed_call
from support.upstack import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

OLGA = ("PAOOLGAKEY0000000001", "olga-secret")
INPUTS = {
    "db_name": "ledger",
    "environment": "dev",
    "instance_size": "small",
    "owner_email": "ledger@example.com",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    postgres_server: str,
    settings: Settings,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    people = KeyStore(
        [
            keys.get(DANA[0]),
            keys.get(ADMIN[0]),
            KeyEntry(
                access_key_id=OLGA[0], secret_access_key=OLGA[1], user="olga", teams=("growth",)
            ),
        ]  # type: ignore[list-item]
    )
    async with fresh_stack(
        postgres_server,
        settings.model_copy(update={"portal_link_seconds": 2}),
        people,
        services=("gateway", "projector"),
        data_dir=tmp_path_factory.mktemp("portal"),
    ) as running:
        yield running


async def link_for(stack: Stack, key: tuple[str, str]) -> str:
    made = await signed_call(stack.url, "POST", "/portal/links", key)
    assert made["url"].startswith(f"{stack.url}/portal/login?token=")
    return made["url"]


async def browser_for(stack: Stack, key: tuple[str, str]) -> tuple[aiohttp.ClientSession, str]:
    """A signed-in browser (its cookie jar) and its session's CSRF token."""
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with browser.get(await link_for(stack, key)) as answer:
        assert answer.status == 200, await answer.text()
    async with browser.get(f"{stack.url}/portal/catalog") as answer:
        assert answer.status == 200
        page = await answer.text()
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', page)
    assert found, page[:500]
    return browser, found.group(1)


async def sessions(stack: Stack) -> int:
    return await stack.pool.fetchval("SELECT count(*) FROM portal_sessions")


async def status_of(stack: Stack, request_id: str) -> str:
    return (await signed_call(stack.url, "GET", f"/requests/{request_id}/status", DANA))["status"]


async def _is(stack: Stack, request_id: str, status: str) -> bool:
    return await status_of(stack, request_id) == status


async def submitted(stack: Stack) -> str:
    made = await signed_call(
        stack.url, "POST", "/requests", DANA, body={"item_id": "postgresql-rds", "inputs": INPUTS}
    )
    return made["request_id"]


async def test_a_link_signs_in_once_with_a_strict_http_only_cookie(stack: Stack) -> None:
    link = await link_for(stack, DANA)
    before = await sessions(stack)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(link) as answer:
            assert answer.status == 200
            cookie = answer.headers["Set-Cookie"]
            assert answer.headers["Referrer-Policy"] == "no-referrer"
            assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        assert cookie.startswith("pao_portal=")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here: Secure would make the browser drop it
        assert await sessions(stack) == before + 1
        async with browser.get(f"{stack.url}/portal/requests") as answer:
            assert answer.status == 200
            assert ">dana<" in await answer.text()

    # The same link again, in another browser: refused, and no session is made.
    async with aiohttp.ClientSession() as other, other.get(link) as again:
        assert again.status == 401
        page = await again.text()
        assert "PAO-AUTH-019" in page
        assert "Set-Cookie" not in again.headers
    assert await sessions(stack) == before + 1


async def test_an_expired_link_or_a_made_up_one_is_refused(stack: Stack) -> None:
    link = await link_for(stack, DANA)
    before = await sessions(stack)
    await asyncio.sleep(2.2)  # the stack's links live 2 s
    async with aiohttp.ClientSession() as browser:
        async with browser.get(link) as answer:
            assert answer.status == 401
            assert "expired or was already used" in await answer.text()
        async with browser.get(f"{stack.url}/portal/login?token=not-a-token") as answer:
            assert answer.status == 401
        async with browser.get(f"{stack.url}/portal/login") as answer:
            assert answer.status == 401
    assert await sessions(stack) == before


async def test_without_a_session_pages_say_how_to_sign_in_and_the_api_refuses(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{stack.url}/portal/requests") as answer:
            assert answer.status == 401
            assert "devctl portal" in await answer.text()
        browser.cookie_jar.update_cookies({"pao_portal": "forged"})
        async with browser.get(f"{stack.url}/portal/requests") as answer:
            assert answer.status == 401
        async with browser.get(f"{stack.url}/api/v1/requests") as answer:
            assert answer.status == 401
            assert (await answer.json())["error"]["code"] == "PAO-AUTH-020"


async def test_another_users_request_page_is_refused_as_the_api_refuses_it(stack: Stack) -> None:
    request_id = await submitted(stack)
    browser, _ = await browser_for(stack, OLGA)
    async with browser:
        async with browser.get(f"{stack.url}/portal/requests/{request_id}") as answer:
            assert answer.status == 404
            page = await answer.text()
            assert f"no request {request_id} that you may see" in page
            assert "ledger" not in page
        async with browser.get(f"{stack.url}/api/v1/requests/{request_id}") as answer:
            assert answer.status == 404
        async with browser.get(f"{stack.url}/portal/requests") as answer:
            assert request_id not in await answer.text()
    dana, _ = await browser_for(stack, DANA)
    async with dana, dana.get(f"{stack.url}/portal/requests/{request_id}") as answer:
        assert answer.status == 200
        assert "ledger" in await answer.text()


async def test_a_state_change_without_the_sessions_csrf_token_is_refused(stack: Stack) -> None:
    request_id = await submitted(stack)
    dana, csrf = await browser_for(stack, DANA)
    olga, olga_csrf = await browser_for(stack, OLGA)
    abort = f"{stack.url}/api/v1/requests/{request_id}/abort"
    async with dana, olga:
        async with dana.post(abort, json={}) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"]["code"] == "PAO-AUTH-021"
        # Another session's token (what a page of another site could at best carry) is wrong.
        async with dana.post(abort, json={}, headers={"X-CSRF-Token": olga_csrf}) as answer:
            assert answer.status == 403
        assert await status_of(stack, request_id) == "submitted"
        # The logout form without its token leaves the session alone.
        async with dana.post(f"{stack.url}/portal/logout", data={}) as answer:
            assert answer.status == 403
        async with dana.post(abort, json={}, headers={"X-CSRF-Token": csrf}) as answer:
            assert answer.status == 202, await answer.text()
        await eventually(
            lambda: _is(stack, request_id, "aborted"), "the abort to reach the read model"
        )
    audit = await signed_call(stack.url, "GET", f"/audit?target={request_id}", ADMIN)
    aborts = [r for r in audit["records"] if r["route"].endswith("/abort")]
    assert [(r["user"], r["status"]) for r in aborts] == [
        ("dana", 403),
        ("dana", 403),
        ("dana", 202),
    ]
    assert aborts[0]["error_code"] == "PAO-AUTH-021"


async def test_a_double_submit_from_the_portal_makes_one_request(stack: Stack) -> None:
    dana, csrf = await browser_for(stack, DANA)
    body: dict[str, Any] = {"item_id": "postgresql-rds", "inputs": {**INPUTS, "db_name": "twice"}}
    headers = {"X-CSRF-Token": csrf, "Idempotency-Key": "portal-double-click-1"}
    async with dana:
        answers = await asyncio.gather(
            *(dana.post(f"{stack.url}/api/v1/requests", json=body, headers=headers) for _ in (1, 2))
        )
        made = {(await a.json())["request_id"] for a in answers}
        for answer in answers:
            assert answer.status == 202
            answer.release()
    assert len(made) == 1


async def test_sign_out_ends_the_session_and_a_session_cannot_make_links(stack: Stack) -> None:
    dana, csrf = await browser_for(stack, DANA)
    async with dana:
        async with dana.post(
            f"{stack.url}/api/v1/portal/links", headers={"X-CSRF-Token": csrf}
        ) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"]["code"] == "PAO-AUTH-022"
        token = next(c.value for c in dana.cookie_jar if c.key == "pao_portal")
        async with dana.post(f"{stack.url}/portal/logout", data={"csrf_token": csrf}) as answer:
            assert answer.status == 200
        # The cookie is gone from the browser, and the token behind it no longer works anywhere.
        async with aiohttp.ClientSession(cookies={"pao_portal": token}) as replay:
            async with replay.get(f"{stack.url}/portal/requests") as answer:
                assert answer.status == 401
            async with replay.get(f"{stack.url}/api/v1/auth/whoami") as answer:
                assert answer.status == 401
