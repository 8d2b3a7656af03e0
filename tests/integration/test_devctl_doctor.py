"""Diagnostics as a user runs them: `devctl doctor`, `--verbose` / `--debug`, and
`devctl request explain`, each a real devctl process against a running gateway."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from test_devctl import devctl, profile_file
from test_request_flow import POSTGRES, SERVICES, status_becomes, submit

from conftest import REPO, TEST_SECRET, fresh_database
from pao.devctl.client import masked
from pao.devctl.doctor import FAIL, OK, WARN, clock_check, version_check
from pao.devctl.explain import explanation
from pao.devctl.version import __version__
from pao.devstack.ports import free_port
from pao.fulfillment.jira import JiraClient
from pao.shared.keystore import KeyStore
from pao.shared.settings import Settings
from support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="session")

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
WRONG_SECRET = "not-the-secret-7f3a9c"


def lines_of(out: str) -> dict[str, str]:
    """Doctor's table as {check name: its line}."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"^(ok|warn|fail|skipped)\s+(ready: \S+|\S+)\s", line)
        if match:
            found[match[2]] = line
    return found


async def test_doctor_against_a_running_gateway_is_all_ok(gateway: str, tmp_path: Path) -> None:
    code, out, err = await devctl("-o", "json", "doctor", config=profile_file(tmp_path, gateway))
    assert code == 0, out + err
    checks = {c["name"]: c for c in json.loads(out)}
    assert {c["status"] for c in checks.values()} == {OK}
    assert {"endpoint", "credentials", "signature", "clock", "ready: database", "version"} <= set(
        checks
    )
    assert "PAOTESTKEY0000000001" in checks["credentials"]["detail"]
    assert "profile local" in checks["credentials"]["detail"]
    assert "dana" in checks["signature"]["detail"]
    assert TEST_SECRET not in out + err


async def test_doctor_against_an_unreachable_endpoint_fails_with_a_fix_and_skips_the_rest(
    tmp_path: Path,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    code, out, err = await devctl("doctor", config=profile_file(tmp_path, nobody))
    assert code == 1
    checks = lines_of(out)
    assert checks["endpoint"].startswith("fail")
    assert "cannot reach" in checks["endpoint"]
    fix = out.split(checks["endpoint"], 1)[1].splitlines()[1]
    assert "fix: Check --endpoint" in fix
    for later in ("signature", "clock", "readiness", "version"):
        assert checks[later].startswith("skipped")
        assert "the endpoint does not answer" in checks[later]
    assert "Traceback" not in out + err


async def test_doctor_with_a_wrong_secret_fails_the_signature_and_says_where_the_key_is(
    gateway: str, tmp_path: Path
) -> None:
    config = profile_file(tmp_path, gateway, WRONG_SECRET)
    code, out, err = await devctl("doctor", config=config)
    assert code == 1
    checks = lines_of(out)
    assert checks["signature"].startswith("fail")
    assert "PAO-AUTH-005" in checks["signature"]
    fix = out.split(checks["signature"], 1)[1].splitlines()[1]
    assert "fix:" in fix
    assert "secret key" in fix
    assert "PAOTESTKEY0000000001" in fix
    assert checks["endpoint"].startswith("ok")
    assert WRONG_SECRET not in out + err


async def test_verbose_shows_each_call_on_stderr_and_nothing_secret(
    gateway: str, tmp_path: Path
) -> None:
    code, out, err = await devctl(
        "-v", "-o", "json", "whoami", config=profile_file(tmp_path, gateway)
    )
    assert code == 0, err
    assert json.loads(out)["user"] == "dana"  # stdout stays the command's answer
    assert re.search(rf"GET /api/v1/auth/whoami -> 200 \d+ ms correlation-id {UUID}", err), err
    assert TEST_SECRET not in out + err
    assert "Signature=" not in err


async def test_debug_shows_signed_header_names_and_bodies_but_no_secret_value(
    gateway: str, tmp_path: Path
) -> None:
    code, out, err = await devctl("--debug", "whoami", config=profile_file(tmp_path, gateway))
    assert code == 0, err
    names = re.search(r"signed headers: (.+)", err)
    assert names, err
    assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(names[1].split(", "))
    assert '"user": "dana"' in err
    assert TEST_SECRET not in out + err
    assert "Signature=" not in err
    assert "AWS4-HMAC-SHA256" not in err


async def test_the_clock_check_warns_well_before_the_gateway_refuses() -> None:
    now = float(int(time.time()))  # the Date header has whole seconds
    assert clock_check(formatdate(now, usegmt=True), now).status == OK
    assert clock_check(formatdate(now - 90, usegmt=True), now).status == WARN
    late = clock_check(formatdate(now - 400, usegmt=True), now)
    assert late.status == FAIL
    assert "400 s ahead" in late.detail
    assert "NTP" in (late.fix or "")


async def test_a_server_of_another_api_version_or_too_old_fails_the_version_check() -> None:
    assert version_check({"version": __version__, "api_version": "v1"}).status == OK
    other_api = version_check({"version": __version__, "api_version": "v2"})
    assert other_api.status == FAIL
    assert "API v2" in other_api.detail
    assert other_api.fix
    assert version_check({"version": "0.0.1", "api_version": "v1"}).status == FAIL


async def test_debug_bodies_never_show_a_secret_field() -> None:
    answer = {
        "user": "dana",
        "access_key_id": "PAOSESSIONKEY",
        "secret_access_key": "s3cr3t",
        "items": [{"password": "hunter2", "session_token": "t0k3n-value"}],
    }
    shown = json.dumps(masked(answer))
    assert "PAOSESSIONKEY" in shown
    for secret in ("s3cr3t", "hunter2", "t0k3n-value"):
        assert secret not in shown


async def test_a_completed_request_has_nothing_to_explain() -> None:
    done = {
        "request_id": "r-1",
        "item_id": "dns-record",
        "kind": "create",
        "status": "completed",
        "finished_at": "2026-12-01T10:00:00+00:00",
        "actions": [{"name": "create_record", "type": "rest", "status": "succeeded"}],
    }
    story = explanation(done, [], parked=None)
    assert "nothing to explain" in story["summary"]
    assert story["why"] is None
    assert story["next"] is None


async def test_a_rest_action_failed_behind_an_open_breaker_says_to_retry_once_it_is_back() -> None:
    failed = {
        "request_id": "r-2",
        "item_id": "dns-record",
        "kind": "create",
        "status": "failed",
        "last_error": "create_record: rest:dns.example.com:443 was unavailable for 600 s",
        "actions": [
            {"name": "reserve", "type": "rest", "status": "succeeded"},
            {
                "name": "create_record",
                "type": "rest",
                "status": "failed",
                "attempts": 3,
                "error": "POST https://dns.example.com/records: ConnectError",
            },
            {"name": "announce", "type": "rest", "status": "pending"},
        ],
    }
    parked = [{"system": "rest:dns.example.com:443", "parked_jobs": 2, "last_parked_at": "10:00"}]
    story = explanation(failed, [], parked)
    assert story["why"]["system"] == "rest:dns.example.com:443"
    assert story["why"]["breaker"]["state"] == "open"
    assert story["retry"] == {
        "runs_again": ["create_record"],
        "then_runs": ["announce"],
        "keeps": ["reserve"],
        "note": "each failed action starts again from its first attempt",
    }
    assert story["next"]["command"] == "devctl request retry r-2"
    assert "breaker is open" in story["next"]["why"]


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    postgres_server: str, settings: Settings, keys: KeyStore, jira_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with fresh_database(postgres_server) as dsn:
        own = settings.model_copy(
            update={
                "database_url": dsn,
                "jira_url": jira_url,
                "jira_poll_seconds": 0.2,
                "catalog_dir": REPO / "catalog",
            }
        )
        async with running_stack(own, keys, services=SERVICES, data_dir=tmp_path) as running:
            yield running


async def test_explain_a_waiting_then_failed_request_shows_the_error_and_suggests_retry(
    stack: Stack, jira_url: str, tmp_path: Path
) -> None:
    config = profile_file(tmp_path, stack.url)
    request_id = await submit(stack, "postgresql-rds", {**POSTGRES, "db_name": "explained"})
    ticket = (await status_becomes(stack, request_id, "awaiting_manual"))["actions"][0]
    key = ticket["outputs"]["key"]

    code, out, err = await devctl("-o", "json", "request", "explain", request_id, config=config)
    assert code == 0, err
    waiting = json.loads(out)
    assert waiting["status"] == "awaiting_manual"
    assert waiting["next"]["command"] == f"wait: ticket {key} is open at {ticket['outputs']['url']}"
    assert waiting["retry"] is None

    async with aiohttp.ClientSession() as http:
        await JiraClient(jira_url, session=http).transition_to(key, "Rejected")
    await status_becomes(stack, request_id, "failed")

    code, out, err = await devctl("request", "explain", request_id, config=config)
    assert code == 0, err
    assert f"request {request_id} (postgresql-rds, create): failed" in out
    assert "why: create_ticket (jira action, calls jira)" in out
    assert "Rejected" in out
    assert "breaker of jira: unknown" in out  # dana may not read the platform's figures
    assert "a retry runs again: create_ticket" in out
    assert f"next: devctl request retry {request_id}" in out
