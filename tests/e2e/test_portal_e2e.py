"""The portal in a real browser (Debian's chromium, driven by Playwright) against `pao up`: sign
in with a `devctl portal --print` link, find an item, fill its form as the server describes it,
submit, and watch the request to its end without reloading the page.

Each page's screenshot is saved under PAO_TEST_ARTIFACTS (default: .artifacts/portal in the
repository, which git ignores)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from conftest import REPO
from pao.fulfillment.jira import JiraClient
from support.upstack import Person, UpStack, eventually, pao_up

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

ALICE = Person("alice", "alice", ("team-apps",), "AKIAPORTALALICE00001", "alice-secret-key-0001")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("PAO_TEST_ARTIFACTS", REPO / ".artifacts")) / "portal"


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def portal_link(stack: UpStack, profile: str) -> str:
    done = stack.devctl("portal", "--print", profile=profile)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/portal/login\?token=[\w-]{40,}", link), link
    return link


async def test_a_developer_requests_a_database_in_the_browser_and_sees_it_completed(
    tmp_path: Path,
) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (.ci/run installs it)"
    async with pao_up(tmp_path, people=(ALICE,)) as stack, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))

            # Sign in: the link opens a session and moves on to the catalog by itself.
            await page.goto(portal_link(stack, "alice"))
            await page.wait_for_url("**/portal/catalog")
            await expect(page.locator(".who")).to_have_text("alice")
            await shot(page, "1-catalog")

            # Find the item by searching, open its page, then its form.
            await page.get_by_label("Search").fill("postgresql")
            await page.get_by_role("button", name="Filter").click()
            await page.get_by_role("link", name="PostgreSQL database (standard)").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "PostgreSQL database (standard)"
            )
            await shot(page, "2-item")
            await page.get_by_role("link", name="Request PostgreSQL database (standard)").click()
            name = page.get_by_label("Database name")
            await expect(name).to_be_visible()

            # The server decides the form: "Why production" exists only for prod.
            why = page.get_by_label("Why production")
            await expect(why).to_have_count(0)
            await page.get_by_label("Environment").select_option(label="prod")
            await expect(why).to_be_visible()
            await page.get_by_label("Environment").select_option(label="dev")
            await expect(why).to_have_count(0)

            # A bad value is answered next to its field, by validate/request.
            await name.fill("Not-A-Name")
            await expect(page.locator("#e-db_name")).to_contain_text("does not match")
            await expect(name).to_have_attribute("aria-invalid", "true")
            await name.fill("portal_db")
            await page.get_by_label("Owner e-mail").fill("alice@example.com")
            await page.get_by_role("radio", name=re.compile("manual")).check()
            await expect(page.locator("#e-db_name")).to_have_text("", timeout=15_000)
            # The preview shows what manual mode runs: the data team's ticket.
            await expect(page.locator("#preview")).to_contain_text("manual")
            await expect(page.locator("#preview")).to_contain_text("jira")
            await shot(page, "3-form")

            # A double click makes one request (one Idempotency-Key, the button disabled).
            await page.get_by_role("button", name="Submit the request").dblclick()
            await page.wait_for_url(re.compile(r".*/portal/requests/[\w-]+$"))
            request_id = page.url.rsplit("/", 1)[1]
            mine = await stack.call(
                "GET", "/requests?requester=alice&item_id=postgresql-standard", profile="alice"
            )
            assert [r["request_id"] for r in mine["requests"]] == [request_id]

            # The request page follows the log live and shows the ticket when it opens.
            log = page.locator("#log li")
            await expect(page.locator("#status")).to_have_text("awaiting_manual", timeout=60_000)
            seen = await log.count()
            await expect(page.locator("#actions")).to_contain_text("key")
            await shot(page, "4-request-waiting")

            # While nothing changes, the page's status polls are revalidated (ETag): 304s.
            await eventually(lambda: _revalidated(stack), "a status poll answered 304", timeout=20)

            status = await stack.call("GET", f"/requests/{request_id}/status", profile="alice")
            ticket = next(a for a in status["actions"] if a["status"] == "awaiting_manual")
            async with aiohttp.ClientSession() as http:
                jira = JiraClient(stack.info["jira"], session=http)
                await jira.transition_to(ticket["outputs"]["key"], "Done")

            # Without reloading: the log grows and the status reaches completed.
            await expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
            await eventually(
                lambda: _more(log, seen), "a new log entry streamed into the page", timeout=30
            )
            await expect(page.locator("#abort-form")).to_be_hidden()
            await shot(page, "5-request-completed")

            # The other pages answer for the same session.
            nav = page.get_by_role("navigation", name="Main")
            await nav.get_by_role("link", name="My requests").click()
            await expect(page.get_by_role("link", name=request_id)).to_be_visible()
            await shot(page, "6-requests")
            await nav.get_by_role("link", name="Resources").click()
            await expect(page.locator(".cards")).to_contain_text("PostgreSQL database (standard)")
            await shot(page, "7-resources")
            await nav.get_by_role("link", name="Approvals").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "Waiting for my approval"
            )
            await shot(page, "8-approvals")

            # A narrow screen gets one column and no sideways scrolling.
            await page.set_viewport_size({"width": 360, "height": 740})
            await page.goto(f"{stack.info['gateway']}/portal/catalog")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"the catalog is {width}px wide on a 360px screen"
            await shot(page, "9-catalog-narrow")
            assert problems == [], problems
        finally:
            await browser.close()


async def _more(log, seen: int) -> bool:
    return await log.count() > seen


async def _revalidated(stack: UpStack) -> bool:
    """Whether the gateway has answered a status read with 304 (its metrics say)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.info['gateway']}/metrics") as answer,
    ):
        text = await answer.text()
    found = re.search(
        r'pao_http_requests_total\{[^}]*route="/api/v1/requests/\{request_id\}/status"'
        r'[^}]*status="304"[^}]*\} ([0-9.]+)',
        text,
    )
    return bool(found and float(found.group(1)) >= 1)
