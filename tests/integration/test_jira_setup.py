"""JIRA as PAO's roadmap sets it up: the embedded server has the PLATFORM project and the
correlation-id field, and `pao jira check` says whether a JIRA has what the catalog uses."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml

from conftest import BIN, REPO
from pao.devstack.jira import CORRELATION_FIELD, CORRELATION_FIELD_NAME
from pao.devstack.ports import free_port
from pao.fulfillment.jira import JiraClient, JiraError

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def jira(jira_url: str) -> AsyncIterator[JiraClient]:
    async with aiohttp.ClientSession() as session:
        yield JiraClient(jira_url, session=session)


async def pao_jira_check(jira_url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`pao jira check` as an operator runs it, configured by environment variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAO_", "AWS_"))}
    env |= {
        "PAO_JIRA_URL": jira_url,
        "PAO_JIRA_CORRELATION_FIELD": CORRELATION_FIELD,
        "PAO_DATA_DIR": str(tmp_path / "no-stack"),
        "PAO_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "pao"),
        "jira",
        "check",
        *args,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_item(root: Path, item_id: str, **jira: object) -> None:
    """A catalog item with one manual action: a ticket with these JIRA settings."""
    item = {
        "apiVersion": "pao.dev/v1",
        "kind": "CatalogItem",
        "metadata": {"id": item_id, "name": item_id, "category": "databases"},
        "fulfillment": {
            "actions": [
                {
                    "name": "ticket",
                    "type": "jira",
                    "jira": {"issue_type": "Task", "summary": "Do it", **jira},
                }
            ]
        },
    }
    folder = root / "databases"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{item_id}.yaml").write_text(yaml.safe_dump(item), encoding="utf-8")


async def test_the_platform_project_takes_tasks_stories_and_bugs(jira: JiraClient) -> None:
    project = await jira.project("PLATFORM")

    assert {"Task", "Story", "Bug"} <= {t["name"] for t in project["issueTypes"]}
    for issue_type in ("Task", "Story", "Bug"):
        issue = await jira.create_issue(
            {
                "project": {"key": "PLATFORM"},
                "issuetype": {"name": issue_type},
                "summary": f"A {issue_type} filed by PAO",
            }
        )
        assert issue.key.startswith("PLATFORM-")
    for key in ("PLAT", "DBA", "SEC", "DATA", "OPS"):
        assert (await jira.project(key))["key"] == key


async def test_an_unknown_project_is_not_found(jira: JiraClient) -> None:
    with pytest.raises(JiraError) as caught:
        await jira.project("NOPE")

    assert caught.value.status == 404
    assert "NOPE" in caught.value.message


async def test_tickets_carry_the_correlation_id_in_its_field(
    jira: JiraClient, jira_url: str
) -> None:
    correlation_id = f"corr-{uuid.uuid4().hex}"
    fields = {f["id"]: f["name"] for f in await jira.fields()}
    assert fields[CORRELATION_FIELD] == CORRELATION_FIELD_NAME

    issue = await jira.create_issue(
        {
            "project": {"key": "PLATFORM"},
            "issuetype": {"name": "Task"},
            "summary": "Filed with a correlation id",
            CORRELATION_FIELD: correlation_id,
        }
    )

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{jira_url}/rest/api/2/issue/{issue.key}") as response,
    ):
        raw = await response.json()
    assert raw["fields"][CORRELATION_FIELD] == correlation_id


async def test_jira_check_passes_for_the_repository_catalog_on_the_embedded_jira(
    jira_url: str, tmp_path: Path
) -> None:
    code, out, err = await pao_jira_check(
        jira_url, tmp_path, "--catalog", str(REPO / "catalog"), "--output", "json"
    )

    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True
    outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
    assert outcomes["connection"] == "ok"
    assert outcomes["project PLATFORM"] == "ok"
    assert outcomes[f"field {CORRELATION_FIELD}"] == "ok"
    assert any(name.startswith("statuses ") for name in outcomes)
    assert "fail" not in outcomes.values()


async def test_jira_check_fails_on_what_the_jira_lacks_and_says_how_to_fix_it(
    jira_url: str, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog"
    write_item(catalog, "legacy-db", project="NOPE")
    write_item(catalog, "odd-ticket", project="PLATFORM", issue_type="Incident")
    write_item(catalog, "strict-ticket", project="PLATFORM", rejected_statuses=["Declined"])
    write_item(catalog, "team-ticket", project="{{ inputs.team_project }}")

    code, out, err = await pao_jira_check(jira_url, tmp_path, "--catalog", str(catalog))

    assert code == 1, out + err
    lines = out.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any("project NOPE" in line and "legacy-db" in line for line in failed), out
    assert any("issue type PLATFORM/Incident" in line for line in failed), out
    assert any("statuses PLATFORM/Task" in line and "'Declined'" in line for line in failed), out
    assert any("create project NOPE" in line for line in lines), out
    assert any(line.startswith("skip") and "team-ticket" in line for line in lines), out
    assert ", 3 failed," in lines[-1], out


async def test_jira_check_reports_an_unreachable_jira_with_the_fix(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    catalog = str(REPO / "catalog")

    code, out, _ = await pao_jira_check(nobody, tmp_path, "--catalog", catalog, "-o", "json")

    assert code == 1
    [connection] = json.loads(out)["checks"]
    assert connection["outcome"] == "fail"
    assert "PAO_JIRA_URL" in connection["fix"]
