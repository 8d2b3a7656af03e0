"""The JIRA client against a real Jira Data Center REST v2 server (jira820 on loopback)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import pytest_asyncio
from aiohttp import web

from pao.devstack.jira import DEFAULT_PROJECTS, EmbeddedJira
from pao.devstack.ports import free_port
from pao.fulfillment.jira import JiraClient, JiraError

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "tok-very-secret-4711"


@pytest_asyncio.fixture(loop_scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def jira(jira_url: str, session: aiohttp.ClientSession) -> JiraClient:
    return JiraClient(jira_url, session=session)


def ticket(label: str, **extra: object) -> dict[str, object]:
    """Fields of a manual-action ticket in the platform team's project."""
    return {
        "project": {"key": "PLAT"},
        "issuetype": {"name": "Task"},
        "summary": "Create parameter /payments/api-key",
        "description": "Requested by dana through PAO.",
        "labels": ["pao", label],
        **extra,
    }


def unique_label() -> str:
    return f"pao-{uuid.uuid4().hex[:12]}"


async def test_created_issue_reads_back_with_what_was_filed(jira: JiraClient, jira_url: str):
    label = unique_label()
    created = await jira.create_issue(ticket(label, priority={"name": "High"}))

    assert created.key.startswith("PLAT-")
    assert created.id
    assert created.url == f"{jira_url}/browse/{created.key}"
    issue = await jira.get_issue(created.key)
    assert issue == created
    assert issue.summary == "Create parameter /payments/api-key"
    assert issue.description == "Requested by dana through PAO."
    assert set(issue.labels) == {"pao", label}
    assert issue.priority == "High"
    assert issue.status == "Open"
    assert issue.status_category == "new"


async def test_an_issue_is_found_again_by_its_label_with_who_filed_it_where(jira: JiraClient):
    label = unique_label()
    created = await jira.create_issue(ticket(label))

    found = await jira.find_issues_by_label(label)

    assert [issue.key for issue in found] == [created.key]
    me = (await jira.myself())["name"]
    assert (found[0].project, found[0].creator, found[0].reporter) == ("PLAT", me, me)
    assert await jira.find_issues_by_label(unique_label()) == []


async def test_comments_are_listed_oldest_first(jira: JiraClient):
    issue = await jira.create_issue(ticket(unique_label()))

    await jira.add_comment(issue.key, "Escalated by dana.")
    await jira.add_comment(issue.key, "Retried after the outage.")

    assert await jira.comments(issue.key) == ["Escalated by dana.", "Retried after the outage."]


async def test_priority_can_be_raised(jira: JiraClient):
    issue = await jira.create_issue(ticket(unique_label(), priority={"name": "Medium"}))

    await jira.set_priority(issue.key, "Highest")

    assert (await jira.get_issue(issue.key)).priority == "Highest"


async def test_done_is_in_the_done_category(jira: JiraClient):
    issue = await jira.create_issue(ticket(unique_label()))

    await jira.transition_to(issue.key, "In Progress")
    assert (await jira.get_issue(issue.key)).status_category == "indeterminate"
    await jira.transition_to(issue.key, "Done")

    done = await jira.get_issue(issue.key)
    assert (done.status, done.status_category) == ("Done", "done")
    await jira.transition_to(issue.key, "Done")  # already there: nothing to do


async def test_a_ticket_can_be_rejected(jira: JiraClient):
    issue = await jira.create_issue(ticket(unique_label()))

    await jira.transition_to(issue.key, "Rejected")

    rejected = await jira.get_issue(issue.key)
    assert (rejected.status, rejected.status_category) == ("Rejected", "done")


async def test_a_status_the_workflow_does_not_offer_is_a_clear_error(jira: JiraClient):
    issue = await jira.create_issue(ticket(unique_label()))

    with pytest.raises(JiraError) as caught:
        await jira.transition_to(issue.key, "Shipped")

    assert not caught.value.transient
    assert "Shipped" in caught.value.message
    assert "Done" in caught.value.message


async def test_an_unknown_project_is_a_permanent_error_naming_it(jira: JiraClient):
    with pytest.raises(JiraError) as caught:
        await jira.create_issue({**ticket(unique_label()), "project": {"key": "NOPE"}})

    assert caught.value.status == 400
    assert not caught.value.transient
    assert "NOPE" in caught.value.message


async def test_an_unknown_issue_is_a_permanent_error(jira: JiraClient):
    with pytest.raises(JiraError) as caught:
        await jira.get_issue("PLAT-999999")

    assert (caught.value.status, caught.value.transient) == (404, False)
    assert "PLAT-999999" in caught.value.message


async def test_a_server_nobody_runs_is_a_transient_error(session: aiohttp.ClientSession):
    jira = JiraClient(
        f"http://127.0.0.1:{free_port()}", session=session, username="pao", token=TOKEN
    )

    with pytest.raises(JiraError) as caught:
        await jira.get_issue("PLAT-1")

    assert caught.value.transient
    assert caught.value.status is None
    assert TOKEN not in str(caught.value)


@pytest_asyncio.fixture(loop_scope="session")
async def outage() -> AsyncIterator[str]:
    """A stand-in for JIRA during an outage: 503 on /unavailable, 429 on /throttled."""

    async def unavailable(request: web.Request) -> web.Response:
        return web.Response(status=503, text="<html>Service Unavailable</html>")

    async def throttled(request: web.Request) -> web.Response:
        return web.json_response(
            {"errorMessages": ["Rate limit exceeded."], "errors": {}},
            status=429,
            headers={"Retry-After": "2"},
        )

    async def secured(request: web.Request) -> web.Response:
        basic = base64.b64encode(f"pao:{TOKEN}".encode()).decode()
        accepted = {f"Bearer {TOKEN}", f"Basic {basic}"}
        if request.headers.get("Authorization") not in accepted:
            return web.json_response({"errorMessages": ["Not authenticated."]}, status=401)
        key = request.match_info["key"]
        fields = {"summary": "s", "status": {"name": "Open", "statusCategory": {"key": "new"}}}
        return web.json_response({"id": "1", "key": key, "fields": fields})

    app = web.Application()
    app.router.add_get("/secured/rest/api/2/issue/{key}", secured)
    app.router.add_get("/unavailable/rest/api/2/issue/{key}", unavailable)
    app.router.add_get("/throttled/rest/api/2/issue/{key}", throttled)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_credentials_reach_jira_as_basic_or_bearer_auth(
    outage: str, session: aiohttp.ClientSession
):
    url = f"{outage}/secured"
    basic = JiraClient(url, session=session, username="pao", token=TOKEN)
    bearer = JiraClient(url, session=session, token=TOKEN)
    anonymous = JiraClient(url, session=session)

    assert (await basic.get_issue("PLAT-7")).key == "PLAT-7"
    assert (await bearer.get_issue("PLAT-7")).status_category == "new"
    with pytest.raises(JiraError) as caught:
        await anonymous.get_issue("PLAT-7")
    assert (caught.value.status, caught.value.transient) == (401, False)
    assert "Not authenticated." in caught.value.message


async def test_an_unavailable_server_is_a_transient_error(
    outage: str, session: aiohttp.ClientSession
):
    jira = JiraClient(f"{outage}/unavailable", session=session, token=TOKEN)

    with pytest.raises(JiraError) as caught:
        await jira.get_issue("PLAT-1")

    assert (caught.value.status, caught.value.transient) == (503, True)
    assert caught.value.retry_after is None
    assert TOKEN not in str(caught.value)


async def test_throttling_is_transient_and_says_when_to_come_back(
    outage: str, session: aiohttp.ClientSession
):
    jira = JiraClient(f"{outage}/throttled", session=session, username="pao", token=TOKEN)

    with pytest.raises(JiraError) as caught:
        await jira.get_issue("PLAT-1")

    assert (caught.value.status, caught.value.transient) == (429, True)
    assert caught.value.retry_after == 2.0
    assert "Rate limit exceeded." in caught.value.message
    assert TOKEN not in str(caught.value)


async def test_embedded_jira_files_into_every_default_project_and_stops_cleanly(
    tmp_path: Path, session: aiohttp.ClientSession
):
    embedded = EmbeddedJira(tmp_path)
    await embedded.start()
    try:
        assert embedded.pid is not None
        family = [psutil.Process(embedded.pid), *psutil.Process(embedded.pid).children(True)]
        jira = JiraClient(embedded.base_url, session=session)
        for project in DEFAULT_PROJECTS:
            issue = await jira.create_issue({**ticket(unique_label()), "project": {"key": project}})
            assert issue.key == f"{project}-1"
    finally:
        await embedded.stop()

    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


async def test_embedded_jira_keeps_issues_across_restarts_when_persisting(
    tmp_path: Path, session: aiohttp.ClientSession
):
    store = tmp_path / "jira.json"
    first = EmbeddedJira(tmp_path, persist=store)
    await first.start()
    try:
        filed = await JiraClient(first.base_url, session=session).create_issue(
            ticket(unique_label())
        )
    finally:
        await first.stop()

    again = EmbeddedJira(tmp_path, persist=store)
    await again.start()
    try:
        jira = JiraClient(again.base_url, session=session)
        assert (await jira.get_issue(filed.key)).labels == filed.labels
        assert (await jira.create_issue(ticket(unique_label()))).key == "PLAT-2"
    finally:
        await again.stop()
