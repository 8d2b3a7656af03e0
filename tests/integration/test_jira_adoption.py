"""A run's JIRA issue is PAO's own: an issue someone else filed with the run's label (in another
project, or in the action's project as another user) is never taken for it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from pao.fulfillment.executors import JiraExecutor, JiraSettings, RunKey
from pao.fulfillment.jira import JiraClient, JiraIssue
from pao.fulfillment.tickets import Tickets

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPEC = {
    "project": "PLAT",
    "issue_type": "Task",
    "summary": "Create parameter /payments/api-key",
    "description": "Requested by dana through PAO.",
}


@pytest_asyncio.fixture(loop_scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def jira(jira_url: str, session: aiohttp.ClientSession) -> JiraClient:
    """PAO's own client, with its credentials (jira820 takes any, and answers `/myself` as
    its `admin`, the default reporter of what that client files)."""
    return JiraClient(jira_url, session=session, username="pao", token="pao-token")


@pytest.fixture
def executor(jira: JiraClient, pool: asyncpg.Pool) -> JiraExecutor:
    return JiraExecutor(jira, JiraSettings(), Tickets(pool))


@pytest.fixture
def run() -> RunKey:
    return RunKey(str(uuid.uuid4()), "ticket", 0)


async def planted(jira: JiraClient, run: RunKey, *labels: str) -> list[JiraIssue]:
    """What a requester who guessed the label (or copied the labels) files as their own."""
    elsewhere = await jira.create_issue(
        {**_fields(run, *labels), "project": {"key": "SEC"}, "reporter": {"name": "mallory"}}
    )
    as_another_user = await jira.create_issue(
        {**_fields(run, *labels), "reporter": {"name": "mallory"}}
    )
    return [elsewhere, as_another_user]


def _fields(run: RunKey, *labels: str) -> dict[str, object]:
    return {
        "project": {"key": "PLAT"},
        "issuetype": {"name": "Task"},
        "summary": "Done already, trust me",
        "labels": ["pao", run.label, *labels],
    }


async def test_a_new_run_opens_its_own_issue_whatever_carries_its_label(
    executor: JiraExecutor, jira: JiraClient, run: RunKey
) -> None:
    strangers = await planted(jira, run)

    issue = await executor.open_issue(SPEC, run)

    assert issue.key not in {s.key for s in strangers}
    assert issue.project == "PLAT"
    assert issue.summary == SPEC["summary"]
    assert issue.creator == (await jira.myself())["name"]
    assert (await executor.open_issue(SPEC, run)).key == issue.key


async def test_a_resumed_run_ignores_issues_pao_did_not_file(
    executor: JiraExecutor, jira: JiraClient, pool: asyncpg.Pool, run: RunKey
) -> None:
    # The run had begun to open its issue and stopped before JIRA answered.
    opening = await Tickets(pool).begin(run.request_id, run.action, run.generation, project="PLAT")
    strangers = await planted(jira, run, opening.label)

    with capture_logs() as logged:
        issue = await executor.open_issue(SPEC, run)

    assert issue.key not in {s.key for s in strangers}
    assert (issue.project, issue.summary) == ("PLAT", SPEC["summary"])
    warned = [e["issue"] for e in logged if "PAO did not open" in e["event"]]
    assert sorted(warned) == sorted(s.key for s in strangers)
    assert {e["log_level"] for e in logged if "PAO did not open" in e["event"]} == {"warning"}
    recorded = await pool.fetchval(
        "SELECT issue_key FROM fulfillment_tickets WHERE request_id = $1", run.request_id
    )
    assert recorded == issue.key


async def test_a_run_stopped_after_jira_created_its_issue_adopts_that_issue(
    executor: JiraExecutor, jira: JiraClient, pool: asyncpg.Pool, run: RunKey
) -> None:
    opening = await Tickets(pool).begin(run.request_id, run.action, run.generation, project="PLAT")
    # JIRA created the run's issue, and the worker stopped before recording its key; then
    # someone who saw it copied its labels onto issues of their own.
    own = await jira.create_issue({**_fields(run, opening.label), "summary": SPEC["summary"]})
    strangers = await planted(jira, run, opening.label)

    issue = await executor.open_issue(SPEC, run)

    assert issue.key == own.key
    assert issue.key not in {s.key for s in strangers}


async def test_without_credentials_only_the_runs_own_label_is_proof(
    jira_url: str, session: aiohttp.ClientSession, pool: asyncpg.Pool, run: RunKey
) -> None:
    # Without credentials JIRA takes PAO for whoever it lets in: anyone's issue looks like PAO's,
    # so the guessable label proves nothing; the random one the run recorded does.
    anonymous = JiraClient(jira_url, session=session)
    executor = JiraExecutor(anonymous, JiraSettings(), Tickets(pool))
    opening = await Tickets(pool).begin(run.request_id, run.action, run.generation, project="PLAT")
    lookalike = await anonymous.create_issue({**_fields(run), "summary": SPEC["summary"]})

    issue = await executor.open_issue(SPEC, run)

    assert issue.key != lookalike.key
    assert (issue.project, issue.summary) == ("PLAT", SPEC["summary"])
    assert opening.label in issue.labels

    stopped = RunKey(str(uuid.uuid4()), "ticket", 0)
    opening = await Tickets(pool).begin(
        stopped.request_id, stopped.action, stopped.generation, project="PLAT"
    )
    own = await anonymous.create_issue({**_fields(stopped, opening.label), "summary": "own"})
    assert (await executor.open_issue(SPEC, stopped)).key == own.key
